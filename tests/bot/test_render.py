"""Templates render to messages Telegram accepts, in both languages and either creator gender; long text splits without
cutting a tag. (The lesson's content is checked in test_lesson_content.py.)"""

from __future__ import annotations

import random
import re
import shutil
from datetime import datetime, timezone
from importlib import resources
from pathlib import Path
from types import SimpleNamespace

import pytest
from markupsafe import Markup
from telegram.helpers import mention_html

from bot.analytics import PostFunnel, Stats
from bot.compare_models import Row
from bot.storage.broadcasts import Progress
from bot.text.render import LANGUAGES, Renderer, shorten
from bot.text.telegram_html import TelegramHTMLError, split_html, visible_length, visible_text
from tests.support.fake_telegram import parse_html, utf16_len

HOSTILE = '<script>alert("x")</script> & &amp; </b> <i [MASK] 🙂 \u202eRTL\u200b'


@pytest.fixture(scope="module")
def renderer() -> Renderer:
    return Renderer()


def mask_rows(n: int, k: int) -> list[list[dict]]:
    return [[{"word": f"w{m}{i}<&>", "score": 0.9 / (i + 1)} for i in range(k)] for m in range(n)]


CAPTIONS = {"prediction_chart", "guide_document", "stats_chart", "stats_funnel_chart"}  # sent under a photo or a file
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
        "precision": HOSTILE,
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
        "split": True,
        "score": None,
    },
    "comment_reply": {
        "mentions": [Markup(mention_html(i, n)) for i, n in ((1, HOSTILE), (2, "Bob"), (3, "Cy"))],
        "guide_name": HOSTILE,
    },
    "guide_list": {},
    "broadcast": {"text": HOSTILE * 20},
    "subscribed": {},
    "broadcast_usage": {},
    "broadcast_preview": {"count": 1000, "text": HOSTILE * 20},
    "broadcast_progress": {"p": Progress(7, "sending", {"sent": 3, "pending": 2, "blocked": 1})},
    "unsubscribed": {},
    "join_channel": {"title": HOSTILE},
    "stats_posts": {
        "funnels": [
            PostFunnel(HOSTILE, datetime(2026, 12, 1, tzinfo=timezone.utc), HOSTILE, 12, 8, 6, 3, 2, 5, 2, 1, 9, 4),
            PostFunnel("-100:0", None),
        ]
    },
    "admin_only": {},
    "reload_done": {
        "guides": [SimpleNamespace(slug="mlm", page_count=9, keywords=("MLM", HOSTILE))] * 3,
        "warnings": [HOSTILE, "guides/bert/hinglish/01.md:1: warning: missing"],
    },
    "reload_failed": {"problems": [HOSTILE, "guides/bert/01.md:3: template error: unexpected '}'"]},
    "guide_in_group": {},
    "guide_document": {},
    "bias_note": {},
    "expired": {},
    "inline_prediction": {"sentence": HOSTILE * 100, "word": HOSTILE, "score": 0.0001, "model_name": "m"},
    "inline_guide": {"bot_username": "mlm_bot", "title": HOSTILE, "description": HOSTILE * 5},
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
    "stats_funnel_chart": {},
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
    "not_from_telegram",
    "bad_request",
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
    assert {"quiz.j2"} <= {p.name for p in (root / "hinglish").iterdir()}


@pytest.mark.parametrize("language", LANGUAGES)
@pytest.mark.parametrize("name", sorted(CONTEXTS))
def test_templates_render_valid_telegram_html_even_with_hostile_text(
    renderer: Renderer, name: str, language: str
) -> None:
    html = renderer.html(name, language=language, **CONTEXTS[name])
    visible = parse_html(html)  # the fake Telegram's own, independent parser
    assert visible.strip() and utf16_len(visible) <= (1024 if name in CAPTIONS else 4096)
    assert "<script>" not in html


@pytest.mark.parametrize("name", sorted(set(CONTEXTS) - {"stats", "broadcast"}))
def test_hinglish_messages_are_not_english(renderer: Renderer, name: str) -> None:
    """Each short message really is translated (the admins' numbers table is mostly numbers and names; a broadcast
    is the creator's own words)."""
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
        "comment_reply",
        mentions=[Markup(mention_html(i, n)) for i, n in enumerate(["Ann", "Bob", "Cy"])],
        guide_name="BERT",
    )
    assert (
        '<a href="tg://user?id=0">Ann</a>, <a href="tg://user?id=1">Bob</a> and <a href="tg://user?id=2">Cy</a>'
        in three
    )
    assert "BERT guides are ready" in three  # the guide they commented for
    one = parse_html(renderer.html("comment_reply", mentions=[Markup(mention_html(7, "Ann"))], guide_name="MLM"))
    assert one.startswith("📘 Ann: your MLM guide is ready.")
    assert parse_html(renderer.html("comment_reply", mentions=[], guide_name="MLM")).startswith(
        "📘 Your MLM guide is ready."
    )


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
    from bot.answers import in_their_words
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


MASCULINE = ["pa raha", "karunga", "sakta hoon", "bharta hoon", "nahi jaanta", "bolta hoon", "rakhunga", "bhejta hoon",
             "dunga", "sikhata hoon", "bhejunga", "padhta hoon", "dikhaunga"]  # fmt: skip


@pytest.mark.parametrize("gender", ["male", "female"])
def test_the_bot_speaks_in_the_creators_gender_in_hinglish(gender: str) -> None:
    """CREATOR_GENDER picks the bot's own verb forms from the one Hinglish template (``g(male, female)``), in every
    message and string; the model's verbs ("woh jaanta hai") are not the bot's and stay as they are."""
    renderer = Renderer(creator_gender=gender)
    said = [renderer.html(name, language="hinglish", **context) for name, context in CONTEXTS.items()]
    strings = renderer._env("hinglish").strings
    said += [renderer.text(n, language="hinglish", **{a: "x" for a in getattr(strings, n).arguments})
             for n in dir(strings) if not n.startswith("_") and n != "error_text"]  # fmt: skip
    text = "\n".join(said)
    endings = {"unga": "ungi", "ta hoon": "ti hoon", "nahi jaanta": "nahi jaanti", "raha": "rahi"}
    feminine = [re.sub(r"(unga|ta hoon|nahi jaanta|raha)$", lambda m: endings[m.group(1)], w) for w in MASCULINE]
    spoken, unspoken = (feminine, MASCULINE) if gender == "female" else (MASCULINE, feminine)
    assert [w for w in unspoken if re.search(rf"\b{w}\b", text)] == []
    key = {"male": ["sikhata hoon", "bhejunga", "karunga"], "female": ["sikhati hoon", "bhejungi", "karungi"]}
    assert all(word in text for word in key[gender]) and set(key[gender]) <= set(spoken)
    english = renderer.html("start", language="english", first_name="A", keyword="MLM", model_name="m",
                            bot_username="b")  # fmt: skip
    assert english == Renderer().html("start", language="english", first_name="A", keyword="MLM", model_name="m",
                                      bot_username="b")  # fmt: skip
    with pytest.raises(ValueError, match="creator gender"):
        Renderer(creator_gender="robot")
