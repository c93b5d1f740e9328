"""Several guides, end to end (real bot, fake Bot API, real SQLite file): a guide made by ``mlm-bot guides new`` in
a temporary GUIDES_DIR answers its own keyword in a DM, under a channel post, in /guide and inline, with the whole
lesson machinery, while "MLM" still gets the MLM lesson; SIGHUP and /reload pick up an edited page (a broken one
keeps the old guides); /forget removes the new guide's rows too."""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
from pathlib import Path

import pytest

from bot.cli import main
from tests.support.bot_harness import bot_settings, eventually, running_bot
from tests.support.chats import GROUP, automatic_forward, bot_messages, comment, keyboard, logged_rows, replies
from tests.support.fake_telegram import BOT_USERNAME, FakeTelegram, parse_html

pytestmark = pytest.mark.usefixtures("no_token_in_logs")
ADMIN = 900


@pytest.fixture
def guides_dir(tmp_path: Path) -> Path:
    """A creator's folder with one guide, made the way docs/guides.md says: ``mlm-bot guides new``."""
    root = tmp_path / "guides"
    assert main(["guides", "new", "bert", "--keywords", "BERT, bert sheet", "--dir", str(root)]) == 0
    return root


@pytest.fixture
def settings(fake: FakeTelegram, bert_dir: Path, tmp_path: Path, guides_dir: Path):
    return bot_settings(fake, bert_dir, tmp_path, guides_dir=str(guides_dir), admin_user_ids=str(ADMIN))


def pages_of(fake: FakeTelegram, chat_id: int, slug: str) -> list[dict]:
    """The bot's messages in this chat that are pages of the guide ``slug`` (their buttons carry it)."""
    return [m for m in bot_messages(fake, chat_id) if f"guide:{slug}:" in str(keyboard(m))]


def data(message: dict, starts: str) -> list[str]:
    return [
        b["callback_data"] for row in keyboard(message) for b in row if b.get("callback_data", "").startswith(starts)
    ]


async def press_for_page(fake: FakeTelegram, user: dict, message: dict, press: str, slug: str) -> dict:
    count = len(pages_of(fake, user["id"], slug))
    await fake.press(user, message, press)
    await fake.wait_for(lambda f: len(pages_of(f, user["id"], slug)) > count, timeout=30)
    return pages_of(fake, user["id"], slug)[-1]


async def test_a_new_guide_answers_its_keyword_in_a_dm_with_the_whole_lesson(fake: FakeTelegram, live_bot_repo) -> None:
    ann = fake.user(400)
    await fake.send_text(ann, "bert please!")
    await fake.wait_for(lambda f: pages_of(f, 400, "bert"), timeout=30)
    first = pages_of(fake, 400, "bert")[0]
    assert first["text"].startswith("📘 BERT guide") and "You commented BERT, so here it is" in first["text"]
    assert "<" in first["text"] and "&" in first["text"]  # Markdown's <, > and & arrive as plain text
    assert data(first, "guide:bert:") == ["guide:bert:p:1", "guide:bert:live", "guide:bert:md", "guide:bert:all"]
    assert keyboard(first)[0][0]["text"] == "Next ▶ (2/2)"
    assert not data(first, "lang:")  # the new guide has no Hinglish pages: no language switch under it

    last = await press_for_page(fake, ann, first, "guide:bert:p:1", "bert")
    assert "2. Try it" in last["text"] and not data(last, "guide:bert:p:")
    assert {b["url"] for row in keyboard(last) for b in row if "url" in b} == {"https://arxiv.org/abs/1810.04805"}
    # Its "Guess, then tap" sentence runs through the live model.
    (prompt,) = data(last, "try:")
    assert prompt == "try:bert:1.0"
    await fake.press(ann, last, prompt)
    await fake.wait_for(lambda f: "Best guess" in bot_messages(f, 400)[-1].get("text", ""), timeout=30)
    assert "The [MASK] sat on the mat." in bot_messages(fake, 400)[-1]["text"]

    # Download: the pages themselves.
    await fake.press(ann, last, "guide:bert:md")
    await fake.wait_for(lambda f: bool(f.sent("sendDocument", 400)), timeout=30)
    document = fake.sent("sendDocument", 400)[0].params["document"]
    markdown = document["content"].decode()
    assert document["filename"] == "bert-guide.md"
    assert markdown.startswith("# 📘 BERT guide") and "## 2. Try it" in markdown and "{{" not in markdown

    # "MLM" still gets the MLM lesson.
    await fake.send_text(ann, "MLM")
    await fake.wait_for(lambda f: pages_of(f, 400, "mlm"), timeout=30)
    assert "You commented MLM" in pages_of(fake, 400, "mlm")[0]["text"]
    rows = await logged_rows(live_bot_repo, count=6)
    assert [(r.kind, r.guide) for r in rows if r.kind in ("guide", "lesson")] == [
        ("guide", "bert"), ("lesson", "bert"), ("lesson", "bert"), ("guide", "mlm")
    ]  # fmt: skip
    assert [r.trigger for r in rows if r.kind == "lesson"] == ["page1", "md"]


async def test_a_comment_under_a_post_gets_its_guide_through_the_public_reply(
    fake: FakeTelegram, live_bot_repo
) -> None:
    bo, cy = fake.user(401, "Bo"), fake.user(402, "Cy")
    fake.never_started.update({401, 402})
    post = await automatic_forward(fake, post_id=31, text="Comment BERT for the cheat sheet")
    await comment(fake, bo, post, "BERT")
    await comment(fake, cy, post, "MLM")  # under the same post, the other guide: a reply of its own
    sent = await replies(fake, GROUP["id"], 2)
    (bert_reply,) = [c for c in sent if parse_html(c.params["text"]).startswith("📘 Bo: your BERT guide is ready.")]
    (mlm_reply,) = [c for c in sent if parse_html(c.params["text"]).startswith("📘 Cy: your MLM guide is ready.")]
    bert_url = bert_reply.params["reply_markup"]["inline_keyboard"][0][0]["url"]
    assert bert_url == f"https://t.me/{BOT_USERNAME}?start=p{GROUP['id']}_{post['message_id']}_bert"
    assert bert_reply.params["reply_markup"]["inline_keyboard"][0][0]["text"] == "📩 Get the BERT guide"
    assert mlm_reply.params["reply_markup"]["inline_keyboard"][0][0]["url"].endswith(f"_{post['message_id']}")

    # Bo taps it: Telegram sends /start <payload>, and the lesson of his guide begins, for the word he commented.
    fake.never_started.discard(401)
    await fake.send_text(bo, f"/start {bert_url.split('start=')[1]}")
    await fake.wait_for(lambda f: pages_of(f, 401, "bert"), timeout=30)
    first = pages_of(fake, 401, "bert")[0]
    assert "You commented BERT" in first["text"]
    last = await press_for_page(fake, bo, first, "guide:bert:p:1", "bert")
    assert "2. Try it" in last["text"]
    comments = await logged_rows(live_bot_repo, "comment", 2)
    assert sorted((r.user_id, r.guide) for r in comments) == [(401, "bert"), (402, "mlm")]
    (started,) = await logged_rows(live_bot_repo, "guide")
    assert (started.guide, started.trigger) == ("bert", f"start:{GROUP['id']}:{post['message_id']}")


async def test_guide_lists_every_guide_and_inline_shares_the_one_asked_for(fake: FakeTelegram, live_bot_repo) -> None:
    di = fake.user(403)
    await fake.send_text(di, "/guide")
    await fake.wait_for(lambda f: bot_messages(f, 403), timeout=30)
    (listing,) = bot_messages(fake, 403)
    assert [b["callback_data"] for row in keyboard(listing) for b in row] == ["guide:mlm", "guide:bert"]
    assert [b["text"] for row in keyboard(listing) for b in row] == [
        "📘 Masked Language Models (MLM), explained", "📘 BERT guide"
    ]  # fmt: skip
    await fake.press(di, listing, "guide:bert")
    await fake.wait_for(lambda f: pages_of(f, 403, "bert"), timeout=30)
    assert "You commented" not in pages_of(fake, 403, "bert")[0]["text"]

    await fake.inline(di, "bert")
    await fake.wait_for(lambda f: bool(f.sent("answerInlineQuery")), timeout=30)
    (result,) = fake.sent("answerInlineQuery")[-1].params["results"]
    assert result["title"] == "📘 BERT guide" and "BERT guide" in result["input_message_content"]["message_text"]
    assert result["reply_markup"]["inline_keyboard"][0][0]["url"] == f"https://t.me/{BOT_USERNAME}?start=g_bert"
    await fake.inline(di, "mlm")
    await fake.wait_for(lambda f: len(f.sent("answerInlineQuery")) == 2, timeout=30)
    (result,) = fake.sent("answerInlineQuery")[-1].params["results"]
    assert result["reply_markup"]["inline_keyboard"][0][0]["url"] == f"https://t.me/{BOT_USERNAME}?start=mlm"
    await fake.send_text(di, "/start g_bert")  # the shared guide's button
    await fake.wait_for(lambda f: len(pages_of(f, 403, "bert")) == 2, timeout=30)


async def test_continue_is_kept_per_guide(fake: FakeTelegram, settings, guides_dir: Path) -> None:
    (guides_dir / "bert" / "03-more.md").write_text("## 3. More\nA third page, so page 2 is in the middle.\n")
    ed = fake.user(404)
    async with running_bot(settings, fake):
        await fake.send_text(ed, "BERT")
        await fake.wait_for(lambda f: pages_of(f, 404, "bert"), timeout=30)
        await press_for_page(fake, ed, pages_of(fake, 404, "bert")[0], "guide:bert:p:1", "bert")
        await fake.send_text(ed, "MLM")  # another guide: no "Continue" from the BERT guide's page
        await fake.wait_for(lambda f: pages_of(f, 404, "mlm"), timeout=30)
        assert "Continue" not in str(keyboard(pages_of(fake, 404, "mlm")[0]))
        await fake.send_text(ed, "BERT")
        await fake.wait_for(lambda f: len(pages_of(f, 404, "bert")) == 3, timeout=30)
        again = pages_of(fake, 404, "bert")[-1]
        assert keyboard(again)[0][0] == {"text": "↪ Continue at page 2/3", "callback_data": "guide:bert:p:1"}


async def test_sighup_and_reload_pick_up_an_edited_page_and_a_broken_one_keeps_the_old(
    fake: FakeTelegram, settings, guides_dir: Path
) -> None:
    fi, admin = fake.user(405), fake.user(ADMIN)
    page = guides_dir / "bert" / "02-try-it.md"
    async with running_bot(settings, fake):
        page.write_text("## 2. Edited\nThe creator changed this page.\n")
        os.kill(os.getpid(), signal.SIGHUP)
        await fake.send_text(fi, "BERT")
        await fake.wait_for(lambda f: pages_of(f, 405, "bert"), timeout=30)

        async def edited_page_sent() -> bool:
            await press_for_page(fake, fi, pages_of(fake, 405, "bert")[0], "guide:bert:p:1", "bert")
            return "The creator changed this page." in pages_of(fake, 405, "bert")[-1]["text"]

        assert await edited_page_sent()

        # A broken page: /reload says where, and the guides people get stay as they were.
        page.write_text("## 2. Broken {{ nope(\n")
        await fake.send_text(admin, "/reload")
        await fake.wait_for(lambda f: bot_messages(f, ADMIN), timeout=30)
        refusal = bot_messages(fake, ADMIN)[-1]["text"]
        assert "kept the old ones" in refusal and f"{page}:1: template error" in refusal
        assert await edited_page_sent()

        # Mended: /reload takes it, and lists the guides.
        page.write_text("## 2. Mended\nFixed.\n")
        await fake.send_text(admin, "/reload")
        await fake.wait_for(lambda f: len(bot_messages(f, ADMIN)) == 2, timeout=30)
        assert (
            "Guides reloaded: mlm (9 pages; MLM), bert (2 pages; BERT, bert sheet)"
            in bot_messages(fake, ADMIN)[-1]["text"]
        )
        await press_for_page(fake, fi, pages_of(fake, 405, "bert")[0], "guide:bert:p:1", "bert")
        assert "Fixed." in pages_of(fake, 405, "bert")[-1]["text"]

        # Someone else's /reload: refused, nothing reloaded.
        await fake.send_text(fi, "/reload")
        await fake.wait_for(lambda f: "Only the bot's admins" in bot_messages(f, 405)[-1].get("text", ""), timeout=30)


async def test_forget_removes_the_new_guides_rows_too(fake: FakeTelegram, settings, tmp_path: Path) -> None:
    gus = fake.user(406)
    async with running_bot(settings, fake) as live_bot_repo:
        await fake.send_text(gus, "BERT")
        await fake.wait_for(lambda f: pages_of(f, 406, "bert"), timeout=30)
        await press_for_page(fake, gus, pages_of(fake, 406, "bert")[0], "guide:bert:p:1", "bert")
        await eventually(lambda: _rows(live_bot_repo, 406, "bert", 2), 15)
        await fake.send_text(gus, "/forget")
        await fake.wait_for(lambda f: any("forget:yes" in str(m.get("reply_markup")) for m in bot_messages(f, 406)))
        question = next(m for m in reversed(bot_messages(fake, 406)) if "forget:yes" in str(m.get("reply_markup")))
        await fake.press(gus, question, "forget:yes")
        await eventually(lambda: _no_rows(live_bot_repo, 406), 15)
    database = sqlite3.connect(tmp_path / "bot.sqlite3")
    try:
        assert database.execute("SELECT count(*) FROM interactions WHERE guide = 'bert'").fetchone() == (0,)
        assert database.execute("SELECT count(*) FROM users WHERE id = 406").fetchone() == (0,)
    finally:
        database.close()


async def _rows(live_bot_repo, user_id: int, guide: str, count: int) -> bool:
    return sum(r.user_id == user_id and r.guide == guide for r in await live_bot_repo.interactions.all()) >= count


async def _no_rows(live_bot_repo, user_id: int) -> bool:
    return not any(r.user_id == user_id for r in await live_bot_repo.interactions.all())


async def test_a_broken_guide_stops_the_start_with_file_and_line(fake: FakeTelegram, settings, guides_dir: Path):
    from bot.config import StartupError
    from bot.runner import serve

    (guides_dir / "bert" / "02-try-it.md").write_text("fine\n\n{% if %}\n")
    with pytest.raises(StartupError) as refused:
        await asyncio.wait_for(serve(settings, asyncio.Event()), 60)
    assert f"{guides_dir / 'bert' / '02-try-it.md'}:3: template error" in str(refused.value)
    assert not fake.sent()  # refused before Telegram was asked anything


async def test_the_bots_other_words_come_from_mlm_bot_templates(fake: FakeTelegram, bert_dir: Path, tmp_path: Path):
    """MLM_BOT_TEMPLATES (here as the setting .env gives it, not the process environment): a folder with only the
    files the creator changed; the rest come from the package."""
    mine = tmp_path / "my-templates"
    (mine / "messages").mkdir(parents=True)
    (mine / "messages" / "start.html").write_text("👋 Welcome to <b>my</b> channel's bot!\n")
    settings = bot_settings(fake, bert_dir, tmp_path, mlm_bot_templates=str(mine))
    async with running_bot(settings, fake):
        await fake.send_text(fake.user(407), "/start")
        await fake.send_text(fake.user(407), "/help")
        await fake.wait_for(lambda f: len(bot_messages(f, 407)) == 2, timeout=30)
    start, help_ = sorted(bot_messages(fake, 407), key=lambda m: "How to use me" in m["text"])  # either order
    assert start["text"] == "👋 Welcome to my channel's bot!" and help_["text"].startswith("How to use me")
