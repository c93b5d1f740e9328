"""Templates render to messages Telegram accepts; long text splits without cutting a tag; the guide's code runs."""

from __future__ import annotations

import contextlib
import io
import random
import re
import shutil
from datetime import datetime, timezone
from importlib import resources
from pathlib import Path

import pytest
from markupsafe import Markup
from telegram.helpers import mention_html

from bot.analytics import Stats
from bot.lineup import Row
from bot.text.render import LANGUAGES, Renderer, shorten
from bot.text.telegram_html import TelegramHTMLError, split_html, visible_length, visible_text
from models.engine.core import FillMaskEngine
from tests.support.fake_telegram import parse_html, utf16_len

HOSTILE = '<script>alert("x")</script> & &amp; </b> <i [MASK] 🙂 \u202eRTL\u200b'


@pytest.fixture(scope="module")
def renderer() -> Renderer:
    return Renderer()


def mask_rows(n: int, k: int) -> list[list[dict]]:
    return [[{"word": f"w{m}{i}<&>", "score": 0.9 / (i + 1)} for i in range(k)] for m in range(n)]


CAPTIONS = {"prediction_chart", "guide_document", "stats_chart"}  # sent under a photo or a file
CONTEXTS = {
    "start": {"first_name": HOSTILE, "keyword": "MLM", "model_name": "bert-base-uncased", "bot_username": "b"},
    "help": {"keyword": "MLM", "model_name": HOSTILE, "bot_username": "b", "max_masks": 5},
    "fallback": {"non_text": False, "keyword": "MLM"},
    "predict_usage": {},
    "prediction": {
        "text": HOSTILE * 50,
        "masks": mask_rows(5, 15),
        "filled": HOSTILE * 50,
        "model_name": "m",
        "truncated": True,
        "mask_spelling": "[MASK]",
    },
    # A photo's caption: Telegram's limit is 1,024 characters (checked below).
    "prediction_chart": {"model_name": HOSTILE, "sentence": HOSTILE * 50, "mask_spelling": "[MASK]"},
    "experiments": {},
    "compare_usage": {},
    "compare_loading": {"count": 4},
    "compare": {
        "sentence": HOSTILE * 50,
        "rows": [
            Row(label=HOSTILE, mask_token="<mask>", masks=mask_rows(5, 3)),
            Row(label="ALBERT", mask_token="[MASK]", error="model_failed"),
        ],
        "errors": [None, HOSTILE],
        "mask_spelling": "[MASK]",
    },
    "quiz_intro": {"count": 5},
    "quiz_lost": {},
    "quiz_score": {"right": 3, "total": 5, "keyword": HOSTILE},
    "tap_offer": {"model_name": HOSTILE},
    "tap_result": {
        "hidden": HOSTILE,
        "masked": HOSTILE * 50,
        "guesses": mask_rows(1, 5)[0],
        "rank": None,
        "top": 50,
        "model_name": HOSTILE,
    },
    "comment_reply": {"mentions": [Markup(mention_html(i, n)) for i, n in ((1, HOSTILE), (2, "Bob"), (3, "Cy"))]},
    "guide_in_group": {},
    "guide_document": {},
    "expired": {},
    "inline_prediction": {"sentence": HOSTILE * 100, "word": HOSTILE, "score": 0.0001, "model_name": "m"},
    "inline_guide": {"bot_username": "mlm_bot"},
    "stats": {
        "s": Stats(
            days=7,
            start=datetime(2026, 11, 19, tzinfo=timezone.utc),
            totals={"guide": 3, "prediction": 9},
            total_users=4,
            guides_sent=3,
            predictions=9,
            inline_queries=1,
            comments=2,
            unique_users=4,
            latency_p50_ms=41.2,
            latency_p95_ms=120.0,
            top_keywords=[(HOSTILE, 2)],
            top_words=[(HOSTILE, 5), ("mat", 1)],
            languages={"english": 3, "hinglish": 40},
        )
    },
    "stats_refused": {},
    "stats_chart": {"days": 7},
    "forget_confirm": {},
    "slow_down": {},
    "forget_done": {"deleted": True, "outcome": "pending"},
    "private_only": {"bot_username": "mlm_bot"},
    "language_choose": {"unknown": HOSTILE * 10, "current": "Hinglish"},
    "language_set": {"keyword": HOSTILE},
}
ERROR_CODES = [
    "no_mask",
    "empty_input",
    "too_many_masks",
    "input_too_long",
    "target_not_single_token",
    "rate_limited",
    "in_flight",
    "busy",
    "timeout",
    "worker_unavailable",
    "internal",
]


def test_every_message_template_is_covered() -> None:
    names = {p.name.removesuffix(".html") for p in (resources.files("templates") / "messages").iterdir()}
    assert names == set(CONTEXTS) | {"error"}


def test_every_language_has_every_message_and_string() -> None:
    """Hinglish falls back to English for a missing file: what ships must have none missing, so nobody who
    chose Hinglish gets a stray English message."""
    root = resources.files("templates")
    english = {p.name for p in (root / "messages").iterdir()}
    assert {p.name for p in (root / "hinglish" / "messages").iterdir()} == english
    macros = lambda path: set(re.findall(r"{% macro (\w+)", path.read_text()))  # noqa: E731
    assert macros(root / "hinglish" / "strings.txt") == macros(root / "strings.txt")
    assert {"guide.j2", "quiz.j2"} <= {p.name for p in (root / "hinglish").iterdir()}


@pytest.mark.parametrize("language", LANGUAGES)
@pytest.mark.parametrize("name", sorted(CONTEXTS))
def test_templates_render_valid_telegram_html_even_with_hostile_text(
    renderer: Renderer, name: str, language: str
) -> None:
    html = renderer.html(name, language=language, **CONTEXTS[name])
    visible = parse_html(html)  # the fake Telegram's own, independent parser
    assert visible.strip() and utf16_len(visible) <= (1024 if name in CAPTIONS else 4096)
    assert "<script>" not in html


@pytest.mark.parametrize("name", sorted(set(CONTEXTS) - {"stats"}))
def test_hinglish_messages_are_not_english(renderer: Renderer, name: str) -> None:
    """Each short message really is translated (the admins' numbers table is mostly numbers and names)."""
    english = renderer.html(name, language="english", **CONTEXTS[name])
    assert renderer.html(name, language="hinglish", **CONTEXTS[name]) != english


@pytest.mark.parametrize("language", LANGUAGES)
@pytest.mark.parametrize("code", ERROR_CODES)
def test_every_error_code_has_its_own_readable_message(renderer: Renderer, code: str, language: str) -> None:
    text = parse_html(renderer.html("error", language=language, code=code, count=9, limit=5, retry_after=12))
    internal = parse_html(renderer.html("error", language=language, code="internal"))
    assert text.strip()
    if code != "internal":
        assert text != internal
    assert ("9" in text and "5" in text) if code == "too_many_masks" else True
    assert "12" in text if code == "rate_limited" else True


def test_comment_reply_names_people_with_links(renderer: Renderer) -> None:
    three = renderer.html(
        "comment_reply", mentions=[Markup(mention_html(i, n)) for i, n in enumerate(["Ann", "Bob", "Cy"])]
    )
    assert (
        '<a href="tg://user?id=0">Ann</a>, <a href="tg://user?id=1">Bob</a> and <a href="tg://user?id=2">Cy</a>'
        in three
    )
    assert "guides are ready" in three
    one = parse_html(renderer.html("comment_reply", mentions=[Markup(mention_html(7, "Ann"))]))
    assert one.startswith("📘 Ann: your MLM guide is ready.")
    assert parse_html(renderer.html("comment_reply", mentions=[])).startswith("📘 Your MLM guide is ready.")


def test_worst_case_prediction_fits_one_message(renderer: Renderer) -> None:
    html = renderer.html("prediction", **{**CONTEXTS["prediction"], "text": "x" * 4096, "filled": "y" * 4096})
    assert utf16_len(parse_html(html)) <= 4096


@pytest.mark.parametrize("language", LANGUAGES)
def test_plain_strings_have_no_markup(renderer: Renderer, language: str) -> None:
    module = renderer._env(language).strings
    for name in dir(module):
        if name.startswith("_"):
            continue
        macro = getattr(module, name)
        args = {arg: "x" for arg in getattr(macro, "arguments", ())}
        text = renderer.text(name, language=language, **args)
        assert text and not re.search(r"</?[a-z]+>", text), name
    # Telegram's limits on the fields these fill: a button's text is short, a command's description at most 256.
    assert len(renderer.text("inline_refusal", language=language, code="too_many_masks", count=99, limit=5)) <= 64
    assert all(
        len(renderer.text(n, language=language)) <= 64
        for n in dir(module)
        if n.startswith("button_") and n != "button_stale" and not getattr(module, n).arguments
    )  # (button_stale is the note a stale button's press shows: up to 200)
    assert len(renderer.text("button_stale", language=language)) <= 200


def test_guide_messages_are_valid_and_complete(renderer: Renderer) -> None:
    pages = renderer.guide_messages(model_name="bert-base-uncased")
    # Short messages by topic, not one wall: each fits a phone screen or two.
    assert 5 <= len(pages) <= 8
    for page in pages:
        assert utf16_len(parse_html(page)) <= 1200
    text = "\n".join(parse_html(p) for p in pages)
    for part in (
        "What is a masked language model",
        "The [MASK] sat on the mat.",
        "training objective",
        "Bidirectional",
        "question answering",
        "BERT",
        "RoBERTa",
        "ALBERT",
        "DistilBERT",
        "Summary",
        "Learn more",
        "Your turn",
    ):
        assert part in text, part
    html = "".join(pages)
    for url in (
        "https://huggingface.co/google-bert/bert-base-uncased",
        "https://huggingface.co/FacebookAI/roberta-base",
        "https://huggingface.co/albert/albert-base-v2",
        "https://huggingface.co/distilbert/distilbert-base-uncased",
        "https://arxiv.org/abs/1810.04805",
        "https://huggingface.co/docs/transformers/tasks/masked_language_modeling",
        "https://huggingface.co/docs/transformers/index",
    ):
        assert f'<a href="{url}">' in html
    assert "argmax of every position" in text  # the seed's mistake, named
    # The creator's voice: headings with emoji, the casual tone.
    assert "Let's go deep into it" in text
    headings = re.findall(r"^<b>(.)", "\n".join(pages), re.M)
    assert sum(ord(c) > 0x1F000 for c in headings) >= 8  # 🤔 1. What is ..., 🎭 2. How masking works ...
    assert sum(ord(c) > 0x1F000 for c in text) >= 12
    # The facts the seed got wrong, right.
    assert "not faster" in text and "sentence-order prediction" in text  # ALBERT
    assert "never appears when the model is fine-tuned" in text  # why 80/10/10
    assert "30,000 WordPiece tokens" in text and "sub-word" in text  # the vocabulary
    assert "most of it on" not in text  # no promise about what the live model will say
    # Example sentences tap-to-copy; code that fits a phone.
    assert "<code>Paris is the capital of [MASK].</code>" in html
    for block in re.findall(r"<pre>(.*?)</pre>", html, re.S):
        assert all(len(line) <= 45 for line in parse_html(block).splitlines()), block


def _lesson(pages: tuple[str, ...]) -> tuple[list[str], list[str], list[str]]:
    """What must be the same in every language: the links, the code, the figures."""
    html = "".join(pages)
    prose = parse_html(re.sub(r"<pre>.*?</pre>", "", html, flags=re.S))
    figures = re.findall(r"\d[\d,.]*\s?(?:%|MB)|\b\d{1,3},\d{3}\b", prose)
    return re.findall(r'href="([^"]+)"', html), re.findall(r"<pre>.*?</pre>", html, re.S), figures


def test_the_hinglish_guide_is_the_same_lesson_in_hinglish(renderer: Renderer) -> None:
    english = renderer.guide_messages(model_name="bert-base-uncased", language="english")
    hinglish = renderer.guide_messages(model_name="bert-base-uncased", language="hinglish")
    # The same pages by topic, each within a phone screen or two.
    assert len(hinglish) == len(english)
    assert all(utf16_len(parse_html(page)) <= 1200 for page in hinglish)
    # One source of facts, code and links (facts.j2, links.j2): the same ones, in the same order.
    links, code, figures = _lesson(hinglish)
    assert (links, code, figures) == _lesson(english)
    assert len(links) == 8 and len(code) == 4 and {"15%", "80%", "30,000", "440 MB"} <= set(figures)
    # In Hinglish, in the creator's voice, with the seed's facts fixed.
    text = "\n".join(parse_html(page) for page in hinglish)
    for part in (
        "Masked language model kya hai",
        "Chalo, deep mein chalte hain",
        "sub-word",
        "tez nahi",  # ALBERT: smaller, not faster
        "sentence-order prediction",
        "fine-tuning ya asli use ke waqt",  # why 80/10/10
        "argmax",
        "Ab aapki baari",
    ):
        assert part in text, part
    headings = re.findall(r"^<b>(.)", "\n".join(hinglish), re.M)
    assert sum(ord(c) > 0x1F000 for c in headings) >= 8
    assert "<code>Paris is the capital of [MASK].</code>" in "".join(hinglish)
    # No English paragraph of the English guide left untranslated.
    english_prose = parse_html(re.sub(r"<pre>.*?</pre>", "", "\n".join(english), flags=re.S))
    titles = [title for _, title, _ in renderer.learn_more()]  # the sources' own titles, shared on purpose
    for line in english_prose.splitlines():
        if len(line) > 40 and not any(title in line for title in titles):
            assert line not in text, line


@pytest.mark.parametrize("language", LANGUAGES)
def test_markdown_document_has_the_same_content(renderer: Renderer, language: str) -> None:
    markdown = renderer.guide_markdown(model_name="bert-base-uncased", language=language)
    pages = renderer.guide_messages(model_name="bert-base-uncased", language=language)
    html_links = set(re.findall(r'href="([^"]+)"', "".join(pages)))
    md_links = set(re.findall(r"\]\((https://[^)]+)\)", markdown))
    assert html_links == md_links and len(md_links) == 8
    assert markdown.count("```python") == 2 and "<b>" not in markdown and "&lt;" not in markdown


@pytest.mark.parametrize("language", LANGUAGES)
def test_the_guides_code_runs_and_reads_the_mask_position(
    renderer: Renderer, bert_dir: Path, bert_engine: FillMaskEngine, language: str
) -> None:
    """Both snippets, run as printed (with the tiny model in place of bert-base-uncased), print the model's
    real top predictions for the mask, not a decoding of every position."""
    markdown = renderer.guide_markdown(model_name="bert-base-uncased", language=language)
    snippets = re.findall(r"```python\n(.*?)\n```", markdown, re.S)
    assert len(snippets) == 2
    top = [p.token_str for p in bert_engine.fill("The cat sat on the [MASK].", top_k=5).masks[0]]
    for code in snippets:
        output = io.StringIO()
        with contextlib.redirect_stdout(output):
            exec(compile(code.replace("bert-base-uncased", str(bert_dir)), "guide", "exec"), {})
        printed = [line.split()[0] for line in output.getvalue().splitlines() if line.strip()]
        assert printed == top


def test_split_never_cuts_a_tag_and_keeps_all_text() -> None:
    rng = random.Random(5)
    pieces = [
        "<b>bold words</b>",
        "<i>it</i>",
        "plain text",
        "&lt;tag&gt;",
        '<a href="https://x.y">link</a>',
        '<pre><code class="language-python">x = 1\n\ny = 2</code></pre>',
        "🙂🙂",
        "\n",
        "\n\n",
        " ",
    ]
    for _ in range(200):
        html = "".join(rng.choice(pieces) for _ in range(rng.randint(1, 120)))
        limit = rng.choice([10, 40, 100, 4096])
        parts = split_html(html, limit)
        for part in parts:
            assert visible_length(part) <= limit
            parse_html(part)  # each part is valid on its own
        joined = re.sub(r"\s+", "", "".join(visible_text(p) for p in parts))
        assert joined == re.sub(r"\s+", "", visible_text(html))


def test_split_prefers_paragraphs() -> None:
    text = "first paragraph here\n\nsecond <b>bold</b> paragraph\n\nthird"
    assert split_html(text, 25) == ["first paragraph here", "second <b>bold</b> paragraph", "third"]


@pytest.mark.parametrize("bad", ["a < b", "<b>x", "<b>x</i>", "<div>x</div>", "a & b", "<a>x</a>"])
def test_the_bots_own_checker_refuses_what_telegram_refuses(bad: str) -> None:
    with pytest.raises(TelegramHTMLError):
        visible_text(bad)


def test_shorten_keeps_the_filled_word_in_view() -> None:
    text = "a " * 500 + "TARGET" + " b" * 500
    short = shorten(text, 100, around="TARGET")
    assert "TARGET" in short and len(short) <= 100 and short.startswith("…") and short.endswith("…")
    assert shorten("short", 100) == "short"


@pytest.mark.parametrize(
    ("sentence", "words", "expected"),
    [
        ("The Eiffel Tower is in [MASK].", ["paris"], "The Eiffel Tower is in paris."),
        ("[MASK] is the capital of France.", ["paris"], "Paris is the capital of France."),
        ("I like it. [mask] does too!", ["she"], "I like it. She does too!"),
        ('"[MASK] is here," he said.', ["it"], '"It is here," he said.'),
        ("He said [MASK] was here.", ["she"], "He said she was here."),
        ("A <mask>  and  a [ MASK ]\n", ["cat", "dog"], "A cat  and  a dog\n"),
        ("Two [MASK] [MASK]", ["only one"], None),
    ],
)
def test_the_best_sentence_keeps_the_persons_own_text(sentence: str, words: list[str], expected: str | None) -> None:
    from bot.predictions import in_their_words
    from models.engine.core import MASK_ALIASES

    assert in_their_words(sentence, words, re.compile(MASK_ALIASES, re.IGNORECASE)) == expected


def test_the_prediction_chart_draws_any_word() -> None:
    """Dollar signs (matplotlib's math markers), emoji and right-to-left words: a picture, never an error."""
    from bot.text.charts import prediction_chart

    masks = [
        [{"word": "$", "score": 0.62}, {"word": "a$b$c", "score": 0.12}, {"word": "🙂", "score": 0.001}],
        [{"word": "مرحبا", "score": 0.3}, {"word": "x" * 60, "score": 0.0}],
    ]
    png = prediction_chart(masks, title="bert: $5 for a [MASK]", mask_label="[MASK]", axis_label="%")
    assert png.startswith(b"\x89PNG")


def test_the_quiz_asks_the_same_questions_in_both_languages() -> None:
    """A person may switch language mid-quiz: the answer is checked by its position, so the positions match."""
    english, hinglish = Renderer().quiz("english"), Renderer().quiz("hinglish")
    assert [(len(q["options"]), q["correct"]) for q in hinglish] == [(len(q["options"]), q["correct"]) for q in english]
    assert all(
        e["question"] != h["question"] and e["explanation"] != h["explanation"]
        for e, h in zip(english, hinglish, strict=True)
    )
    assert english[0]["options"][english[0]["correct"]] == hinglish[0]["options"][hinglish[0]["correct"]] == "15%"


@pytest.mark.parametrize("language", LANGUAGES)
def test_the_quiz_fits_telegrams_poll_limits(language: str) -> None:
    """Checked here against Telegram's numbers as well as by the fake Bot API in the end-to-end test."""
    questions = Renderer().quiz(language)
    assert len(questions) == 5
    for q in questions:
        assert 1 <= len(q["question"]) <= 300 and 2 <= len(q["options"]) <= 10
        assert all(1 <= len(o) <= 100 for o in q["options"]) and 0 <= q["correct"] < len(q["options"])
        assert len(q["explanation"]) <= 200 and q["explanation"].count("\n") <= 2
    assert len({q["correct"] for q in questions}) > 1  # the right answer is not always in the same place


def test_your_own_wording_in_a_copy_of_the_templates(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """MLM_BOT_TEMPLATES: a copy of templates/ with your own words, per language; what the copy lacks in
    Hinglish comes from the copy's English."""
    copy = tmp_path / "wording"
    shutil.copytree(resources.files("templates"), copy, ignore=shutil.ignore_patterns("*.py", "__pycache__"))
    (copy / "messages" / "expired.html").write_text("Gone, sorry.")
    (copy / "hinglish" / "messages" / "expired.html").write_text("Chala gaya.")
    (copy / "hinglish" / "messages" / "private_only.html").unlink()
    monkeypatch.setenv("MLM_BOT_TEMPLATES", str(copy))
    mine = Renderer()
    assert mine.html("expired") == "Gone, sorry." and mine.html("expired", language="hinglish") == "Chala gaya."
    english = Renderer().html("private_only", language="english", bot_username="b")
    assert mine.html("private_only", language="hinglish", bot_username="b") == english
