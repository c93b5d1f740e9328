"""Keyword messages in a group are requests like any other: outside a discussion thread they count once per person
in that group (not once per message), and each spends its sender's action budget. The real bot, the fake Bot API,
a real SQLite file."""

from __future__ import annotations

from pathlib import Path

from bot.storage.tables import CommentTrigger, OutboxReply
from tests.support.bot_harness import bot_settings, running_bot
from tests.support.chats import GROUP, automatic_forward, comment, lesson_pages, logged_rows
from tests.support.fake_telegram import FakeTelegram


async def _rows(live_bot_repo, table: type) -> list:
    from sqlalchemy import select

    async with live_bot_repo.db.sessions() as session:
        return list((await session.scalars(select(table))).all())


async def test_top_level_keyword_messages_count_once_per_person_in_the_group(fake: FakeTelegram, live_bot_repo) -> None:
    stranger, known = fake.user(81, "Stan"), fake.user(82, "Kim")
    fake.never_started.add(81)
    await fake.send_text(known, "/start")
    await fake.wait_for(lambda f: bool(f.sent("sendMessage", 82)))
    for n in range(3):  # no thread, no reply: three messages in the group's main chat each
        await fake.push("message", fake.message(GROUP, stranger, f"MLM {n}"))
        await fake.push("message", fake.message(GROUP, known, f"mlm please {n}"))
    await fake.wait_for(lambda f: bool(f.sent("sendMessage", GROUP["id"])) and bool(lesson_pages(f, 82)))
    await fake.settle(1.5)
    (reply,) = fake.sent("sendMessage", GROUP["id"])  # one public reply for the stranger, however many messages
    assert "Stan" in reply.params["text"]
    assert len(lesson_pages(fake, 82)) == 1  # one DM guide for the one who started the bot
    claims = await _rows(live_bot_repo, CommentTrigger)
    assert sorted((c.post_key, c.user_id) for c in claims) == [(f"{GROUP['id']}:0", 81), (f"{GROUP['id']}:0", 82)]
    rows = await logged_rows(live_bot_repo, "comment", 2)
    assert sorted(r.outcome for r in rows) == ["button", "dm"]
    assert await _rows(live_bot_repo, OutboxReply) == []  # the reply went out: nothing owed, nothing piling up


async def test_keyword_comments_spend_the_senders_budget(fake: FakeTelegram, bert_dir: Path, tmp_path: Path) -> None:
    """Under five different posts (each a new claim), someone with a budget of two actions a minute is answered
    twice; the others under the same posts are not held up by it."""
    settings = bot_settings(fake, bert_dir, tmp_path, actions_per_minute=2)
    spammer, other = fake.user(83, "Sam"), fake.user(84, "Olga")
    fake.never_started.update({83, 84})
    async with running_bot(settings, fake) as live_bot_repo:
        posts = [await automatic_forward(fake, post_id=100 + n) for n in range(5)]
        for post in posts:
            await comment(fake, spammer, post, "MLM")
        await comment(fake, other, posts[0], "MLM")
        await fake.wait_for(lambda f: any("Olga" in c.params["text"] for c in f.sent("sendMessage", GROUP["id"])))
        await fake.settle(1.5)
        claims = await _rows(live_bot_repo, CommentTrigger)
    assert sum(c.user_id == 83 for c in claims) == 2
    assert sum(c.user_id == 84 for c in claims) == 1
    named = [c.params["text"] for c in fake.sent("sendMessage", GROUP["id"]) if "Sam" in c.params["text"]]
    assert len(named) == 2
    assert not fake.sent("sendMessage", 83), "groups never hear 'slow down', and strangers are never DMed"
