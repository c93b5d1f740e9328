"""The guide as a paced lesson, end to end against the fake Bot API: one page a press, the student's own pace,
prediction prompts answered by the live model, the .md copy and the whole guide one tap away, and a press that
works after a restart."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.text.render import Renderer
from models.engine.core import FillMaskEngine
from tests.support.bot_harness import bot_settings, running_bot
from tests.support.chats import (
    GROUP,
    bot_messages,
    guide_document,
    keyboard,
    lesson_pages,
    lesson_started,
    logged_rows,
    mlm_guide,
    mlm_pages,
)
from tests.support.fake_telegram import BOT_ID, BOT_USERNAME, FakeTelegram, parse_html

pytestmark = pytest.mark.usefixtures("no_token_in_logs")

PAGES = mlm_guide().page_count
CODE_PAGE = mlm_guide().code_page()


def callbacks(message: dict) -> list[str]:
    return [b["callback_data"] for row in keyboard(message) for b in row if "callback_data" in b]


async def next_page(fake: FakeTelegram, user: dict, chat_id: int, data: str) -> dict:
    """Press ``data`` on the newest lesson page; returns the page it brings."""
    count = len(lesson_pages(fake, chat_id))
    await fake.press(user, lesson_pages(fake, chat_id)[-1], data)
    await fake.wait_for(lambda f: len(lesson_pages(f, chat_id)) > count, timeout=30)
    return lesson_pages(fake, chat_id)[-1]


async def test_the_lesson_comes_a_page_a_press_to_the_last_page(
    fake: FakeTelegram, live_bot_repo, bert_dir: Path
) -> None:
    ann = fake.user(300)
    await fake.send_text(ann, "MLM")
    await fake.wait_for(lambda f: lesson_started(f, 300), timeout=30)
    await fake.settle(0.5)
    (first,) = bot_messages(fake, 300)  # one page, no burst: no other message, no document
    assert not fake.sent("sendDocument", 300)
    assert "You commented MLM" in first["text"] and "1. What is a masked language model" in first["text"]
    assert callbacks(first) == ["guide:mlm:p:1", f"guide:mlm:p:{CODE_PAGE}", "guide:mlm:live", "guide:mlm:md",
                                "guide:mlm:all", "lang:hinglish:guide:mlm"]  # fmt: skip
    assert keyboard(first)[0][0]["text"] == f"Next ▶ (2/{PAGES})"
    expected = mlm_pages(bert_dir.name, "MLM")
    assert first["text"] == parse_html(expected[0])
    for number in range(1, PAGES):
        page = await next_page(fake, ann, 300, f"guide:mlm:p:{number}")
        assert page["text"] == parse_html(expected[number])
    last = lesson_pages(fake, 300)[-1]
    assert "Learn more" in last["text"] and not any(c.startswith("guide:mlm:p:") for c in callbacks(last))
    assert {b["url"] for row in keyboard(last) for b in row if "url" in b} >= {"https://arxiv.org/abs/1810.04805"}
    assert len(fake.sent("answerCallbackQuery")) == PAGES - 1  # every press answered (the spinner stops)
    steps = [row.trigger for row in await logged_rows(live_bot_repo, "lesson", PAGES - 1)]
    assert steps == [f"page{n}" for n in range(1, PAGES)]


async def test_skip_to_code_download_try_live_and_all_at_once(fake: FakeTelegram, live_bot_repo) -> None:
    bo = fake.user(301)
    await fake.send_text(bo, "/guide")
    await fake.wait_for(lambda f: lesson_started(f, 301), timeout=30)
    assert "You commented" not in bot_messages(fake, 301)[0]["text"]  # /guide: nobody commented
    code = await next_page(fake, bo, 301, f"guide:mlm:p:{CODE_PAGE}")
    assert "fill-mask pipeline" in code["text"] and "guide:mlm:p:" + str(CODE_PAGE + 1) in str(callbacks(code))
    document = await guide_document(fake, 301, bo)
    assert document["filename"] == "mlm-guide.md" and document["content"].decode().startswith("# 🧠")
    before = len(fake.sent("sendMessage", 301))
    await fake.press(bo, code, "guide:mlm:live")
    await fake.wait_for(lambda f: len(f.sent("sendMessage", 301)) > before, timeout=30)
    experiments = bot_messages(fake, 301)[-1]
    assert "Try it yourself" in experiments["text"] and "quiz" in callbacks(experiments)
    before = len(fake.sent("sendMessage", 301))
    await fake.press(bo, lesson_pages(fake, 301)[0], "guide:mlm:all")  # on the first page
    await fake.wait_for(lambda f: len(f.sent("sendMessage", 301)) >= before + PAGES + 1, timeout=30)
    assert [row.trigger for row in await logged_rows(live_bot_repo, "lesson", 4)] == [
        f"page{CODE_PAGE}",
        "md",
        "live",
        "all",
    ]


async def test_prompts_and_the_bias_pair_are_answered_by_the_live_model(
    fake: FakeTelegram, live_bot_repo, bert_engine: FillMaskEngine
) -> None:
    cy = fake.user(302)
    await fake.send_text(cy, "MLM")
    await fake.wait_for(lambda f: lesson_started(f, 302), timeout=30)
    masking = await next_page(fake, cy, 302, "guide:mlm:p:1")
    assert masking["text"].count("The [MASK] sat on the mat.") == 1
    prompt = next(b for row in keyboard(masking) for b in row if b.get("callback_data", "").startswith("try:"))
    assert prompt["text"].startswith("🤔") and "The [MASK] sat on the mat." in prompt["text"]
    await fake.press(cy, masking, prompt["callback_data"])
    await fake.wait_for(lambda f: "Best guess" in bot_messages(f, 302)[-1].get("text", ""), timeout=30)
    top = bert_engine.fill("The [MASK] sat on the mat.", words_only=True).masks[0][0].token_str.strip()
    assert top in bot_messages(fake, 302)[-1]["text"]
    # The bias pair, from the experiments: the model's words, and one line on why it matters.
    experiments = Renderer().experiments()
    await fake.press(cy, masking, "guide:mlm:live")
    await fake.wait_for(lambda f: "Try it yourself" in bot_messages(f, 302)[-1].get("text", ""), timeout=30)
    ready = bot_messages(fake, 302)[-1]
    for number in Renderer().bias_experiments():
        assert f"try:{number}" in callbacks(ready)
        await fake.press(cy, ready, f"try:{number}")
        sentence = experiments[number][1]
        await fake.wait_for(lambda f, s=sentence: s in bot_messages(f, 302)[-1].get("text", ""), timeout=30)
        answer = bot_messages(fake, 302)[-1]["text"]
        top = bert_engine.fill(sentence, words_only=True).masks[0][0].token_str.strip()
        assert top in answer and "stereotypes included" in answer


async def test_a_press_goes_on_after_a_restart(fake: FakeTelegram, bert_dir: Path, tmp_path: Path) -> None:
    """Nothing per person lives in the process: the page pressed is in the button, so another process (a restart,
    another replica) brings the next page."""
    di = fake.user(303)
    settings = bot_settings(fake, bert_dir, tmp_path)
    async with running_bot(settings, fake):
        await fake.send_text(di, "MLM")
        await fake.wait_for(lambda f: lesson_started(f, 303), timeout=30)
        await next_page(fake, di, 303, "guide:mlm:p:1")
        await next_page(fake, di, 303, "guide:mlm:p:2")
    async with running_bot(settings, fake) as live_bot_repo:
        page = await next_page(fake, di, 303, "guide:mlm:p:3")
        assert page["text"] == parse_html(mlm_pages(bert_dir.name)[3])
        await logged_rows(live_bot_repo, "lesson", 3)
    # Back another day (a third process): the lesson starts again, and offers to go on where they were.
    async with running_bot(settings, fake):
        await fake.send_text(di, "/guide")
        await fake.wait_for(lambda f: lesson_started(f, 303, 2), timeout=30)
        again = lesson_pages(fake, 303)[-1]
        assert keyboard(again)[0][0] == {"text": f"↪ Continue at page 4/{PAGES}", "callback_data": "guide:mlm:p:3"}
        page = await next_page(fake, di, 303, "guide:mlm:p:3")
    assert page["text"] == parse_html(mlm_pages(bert_dir.name)[3])


MADE_UP = ["guide:mlm:p:99", "guide:p:99", "guide:mlm:p:00x", "guide:mlm:p:-1", "guide:zzz", "guide:nope:p:1",
           "guide:mlm:p:" + "9" * 80]  # fmt: skip


@pytest.mark.parametrize("data", MADE_UP)
async def test_made_up_lesson_buttons_are_answered_and_send_nothing(
    fake: FakeTelegram, live_bot_repo, data: str
) -> None:
    ed = fake.user(304)
    await fake.send_text(ed, "MLM")
    await fake.wait_for(lambda f: lesson_started(f, 304), timeout=30)
    first = lesson_pages(fake, 304)[-1]
    await fake.press(ed, {**first, "reply_markup": {"inline_keyboard": [[{"text": "x", "callback_data": data}]]}}, data)
    await fake.wait_for(lambda f: bool(f.sent("answerCallbackQuery")), timeout=30)
    await fake.settle(0.5)
    assert len(bot_messages(fake, 304)) == 1


async def test_a_lesson_button_in_a_group_says_private_only(fake: FakeTelegram, live_bot_repo) -> None:
    """A lesson page's button in a group (made up: the lesson is private): answered, nothing posted there."""
    fi = fake.user(305)
    page = fake.message(
        GROUP, {"id": BOT_ID, "is_bot": True, "first_name": "MLM Bot", "username": BOT_USERNAME}, "page"
    )
    page["reply_markup"] = {"inline_keyboard": [[{"text": "Next", "callback_data": "guide:mlm:p:1"}]]}
    await fake.press(fi, page, "guide:mlm:p:1")
    await fake.wait_for(lambda f: bool(f.sent("answerCallbackQuery")), timeout=30)
    await fake.settle(0.5)
    assert "private chat" in fake.sent("answerCallbackQuery")[0].params["text"]
    assert not fake.sent("sendMessage", GROUP["id"])


def test_every_lesson_button_fits_telegram_and_matches_its_pattern() -> None:
    """The longest data a guide can give its buttons (a 32-character slug, page 99, the 100th prompt) stays within
    Telegram's 64 bytes and is what the flow registers: a guide file cannot make a button Telegram refuses."""
    import re
    from types import SimpleNamespace

    from bot.guides.library import MAX_BUTTONS, MAX_PAGES, SLUG
    from bot.handlers import lesson

    slug = "a" * 32
    assert SLUG.fullmatch(slug) and not SLUG.fullmatch(slug + "a")
    guide = SimpleNamespace(slug=slug)
    datas = [lesson.prompt_data(slug, MAX_PAGES, MAX_BUTTONS - 1), lesson.page_data(guide, MAX_PAGES)]
    datas += [lesson.start_data(guide), lesson.start_data(), *(lesson.step_data(guide, s) for s in lesson.STEPS)]
    for data in datas:
        assert len(data.encode()) <= 64, data
        assert re.fullmatch(lesson.PATTERN, data) or re.fullmatch(lesson.TRY_PATTERN, data), data
    assert lesson.parse(lesson.page_data(guide, 7)) == lesson.Press(slug, "page", 7)
