"""``detect_trigger``: the keyword as a whole word, in any case and Unicode form; never inside another word."""

from __future__ import annotations

import pytest

from bot.text.triggers import detect_trigger, normalize


@pytest.mark.parametrize(
    "text",
    [
        "MLM", "mlm", "Mlm", "mlm?", "MLM!", "#MLM", "#mlm", "(MLM)", "«MLM»", "send me MLM please",
        "MLM, please", "comment: mlm", "ＭＬＭ", "M\u200bLM", "M\u200dL\u2060M", "\u202bMLM\u202c", "mlm🙏", "MLM\n",
        "@MLM", "MLM.", "ml\u00adm",
    ],
)  # fmt: skip
def test_keyword_as_a_word_triggers(text: str) -> None:
    assert detect_trigger(text, ["MLM"]) == "MLM"


@pytest.mark.parametrize(
    "text",
    ["html", "xmlm", "mlmodel", "MLMs", "mlm2", "mlm_bot", "HTML5", "", "M L M", "ml-m", "MLḾ", "xｍｌｍ"],
)
def test_words_that_contain_the_letters_do_not(text: str) -> None:
    assert detect_trigger(text, ["MLM"]) is None


def test_none_and_empty_are_no_trigger() -> None:
    assert detect_trigger(None, ["MLM"]) is None
    assert detect_trigger("MLM", []) is None


def test_keywords_are_configurable_and_the_configured_spelling_comes_back() -> None:
    keywords = ["MLM", "bert guide", "Маска"]
    assert detect_trigger("send the BERT GUIDE pls", keywords) == "bert guide"
    assert detect_trigger("маска!", keywords) == "Маска"
    assert detect_trigger("bert guides", keywords) is None


def test_normalize_folds_case_width_and_invisible_characters() -> None:
    assert normalize("ＭＬ\u200bM") == "mlm"
