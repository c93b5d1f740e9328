"""Follow-ups people asked for, end to end: "🔔" and /subscribe, /unsubscribe, /forget; and a broadcast to 1,000
subscribers by a real ``mlm-bot run`` that is killed (SIGKILL) half-way and started again: everyone else gets it
exactly once, at most the one message in flight is "unknown", nobody twice; people who blocked the bot are
unsubscribed; someone talking to the bot meanwhile is answered before the broadcast's next messages."""

from __future__ import annotations

import asyncio
import sqlite3
import subprocess
from datetime import datetime, timezone
from pathlib import Path

import pytest

from bot.storage import Database
from bot.storage.writes import SubscriptionChanged, UserInfo, UserStarted, write_all
from tests.support.bot_harness import eventually
from tests.support.chats import bot_messages, keyboard
from tests.support.fake_telegram import FakeTelegram, parse_html
from tests.support.processes import MLM_BOT, bot_process_env, start_bot_process

pytestmark = pytest.mark.usefixtures("no_token_in_logs")
TEXT = "🎬 New video and a new guide: comment BERT under it! <3 & more"
SUBSCRIBERS = range(10_000, 11_000)
BLOCKED = set(range(10_000, 11_000, 50))  # 20 of them blocked the bot since they subscribed


def subscribed(database: Path, user_id: int) -> bool:
    with sqlite3.connect(database) as db:
        row = db.execute("SELECT subscribed_at FROM users WHERE id = ?", (user_id,)).fetchone()
    return bool(row and row[0])


async def test_subscribe_by_button_and_command_and_forget(fake: FakeTelegram, live_bot_repo, settings) -> None:
    database = Path(settings.database_url.split("///", 1)[1])
    ann = fake.user(700)
    await fake.send_text(ann, "/start")
    await fake.wait_for(lambda f: bot_messages(f, 700), timeout=30)
    (greeting,) = bot_messages(fake, 700)
    assert ["🔔 Tell me when there's a new guide"] == [b["text"] for row in keyboard(greeting) for b in row
                                                      if b.get("callback_data") == "sub:on"]  # fmt: skip
    await fake.press(ann, greeting, "sub:on")
    await fake.wait_for(lambda f: bool(f.sent("editMessageReplyMarkup")), timeout=30)
    assert fake.sent("answerCallbackQuery")[0].params["text"].startswith("🔔 Done")
    edited = fake.sent("editMessageReplyMarkup")[0].params["reply_markup"]["inline_keyboard"]
    assert {"text": "🔕 Stop new-guide messages", "callback_data": "sub:off"} in [b for row in edited for b in row]
    assert await eventually(lambda: asyncio.to_thread(subscribed, database, 700), 15)

    await fake.send_text(ann, "/unsubscribe")
    await fake.wait_for(lambda f: any("Stopped" in m.get("text", "") for m in bot_messages(f, 700)), timeout=30)
    assert await eventually(lambda: _not(asyncio.to_thread(subscribed, database, 700)), 15)
    await fake.send_text(ann, "/subscribe")
    await fake.wait_for(lambda f: any("I'll message you" in m.get("text", "") for m in bot_messages(f, 700)), 30)
    assert await eventually(lambda: asyncio.to_thread(subscribed, database, 700), 15)
    await fake.send_text(ann, "/start")  # the greeting knows now
    await fake.wait_for(lambda f: len([m for m in bot_messages(f, 700) if "sub:off" in str(keyboard(m))]) >= 1)

    await fake.send_text(ann, "/forget")
    await fake.wait_for(lambda f: any("forget:yes" in str(m.get("reply_markup")) for m in bot_messages(f, 700)))
    question = next(m for m in reversed(bot_messages(fake, 700)) if "forget:yes" in str(m.get("reply_markup")))
    await fake.press(ann, question, "forget:yes")
    assert await eventually(lambda: _not(asyncio.to_thread(subscribed, database, 700)), 15)


async def _not(check) -> bool:
    return not await check


async def seed_subscribers(url: str) -> None:
    database = Database(url)
    await database.migrate()
    now = datetime.now(timezone.utc)
    people = [UserInfo(user_id) for user_id in SUBSCRIBERS]
    await write_all(
        database, [UserStarted(p, now) for p in people] + [SubscriptionChanged(p, True, now) for p in people]
    )
    await database.close()


async def cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """``mlm-bot broadcast ARGS``, as the creator runs it beside the bot."""
    command = [MLM_BOT, "broadcast", *args]
    run = lambda: subprocess.run(command, env=env, capture_output=True, text=True, timeout=120, check=False)  # noqa: E731
    return await asyncio.to_thread(run)


def broadcast_done(database: Path) -> bool:
    with sqlite3.connect(database) as db:
        return db.execute("SELECT state FROM broadcasts WHERE id = 1").fetchone() == ("done",)


def broadcast_states(database: Path) -> dict[int, str]:
    with sqlite3.connect(database) as db:
        return dict(db.execute("SELECT user_id, state FROM broadcast_recipients"))


def received(fake: FakeTelegram) -> dict[int, int]:
    counts: dict[int, int] = {}
    for call in fake.sent("sendMessage"):
        if "comment BERT under it" in parse_html(call.params.get("text", "")):
            chat = int(call.params["chat_id"])
            counts[chat] = counts.get(chat, 0) + 1
    return counts


async def test_a_broadcast_killed_half_way_goes_on_once_for_everyone(
    fake: FakeTelegram, bert_dir: Path, tmp_path: Path
) -> None:
    database = tmp_path / "bot.sqlite3"
    url = f"sqlite+aiosqlite:///{database}"
    await seed_subscribers(url)
    fake.blocked_by.update(BLOCKED)
    env = bot_process_env(fake, bert_dir, database, BROADCAST_PER_SECOND="30", LOG_LEVEL="WARNING")
    (tmp_path / "message.txt").write_text(TEXT)
    queued = await cli(env, "--text-file", str(tmp_path / "message.txt"), "--guide", "mlm", "--yes")
    assert queued.returncode == 0 and "queued for 1000 people" in queued.stdout, queued.stdout + queued.stderr

    process = await start_bot_process(fake, env, tmp_path)
    try:
        await fake.wait_for(lambda f: len(received(f)) >= 400, timeout=120)
        process.kill()  # SIGKILL: no goodbye, whatever was in flight stays in flight
        await process.wait()
        assert len(received(fake)) < 1000 - len(BLOCKED), "the kill came too late to test anything"
        process = await start_bot_process(fake, env, tmp_path)
        # Someone talks to the bot during the broadcast: answered before the broadcast's next few messages.
        before = len(fake.calls)
        await fake.send_text(fake.user(5000), "The cat sat on the [MASK].")
        await fake.wait_for(lambda f: bool(f.sent("sendMessage", 5000)), timeout=30)
        between = fake.calls[before:]
        answer_at = next(
            i for i, c in enumerate(between) if c.method == "sendMessage" and c.params["chat_id"] == "5000"
        )
        broadcast_sends = sum(int(c.params.get("chat_id", 0)) in SUBSCRIBERS for c in between[:answer_at])
        assert broadcast_sends <= 5, f"{broadcast_sends} broadcast messages went before the answer"
        await eventually(lambda: asyncio.to_thread(broadcast_done, database), 120)
    finally:
        process.terminate()
        await asyncio.wait_for(process.wait(), 60)

    states = broadcast_states(database)
    counts = received(fake)
    assert max(counts.values()) == 1, "nobody gets it twice"
    unknown = [user for user, state in states.items() if state == "unknown"]
    assert len(unknown) <= 1  # the one message in flight at the kill
    for user in SUBSCRIBERS:
        if user in BLOCKED:
            assert states[user] == "blocked" and not subscribed(database, user) and user not in counts
        elif user not in unknown:
            assert states[user] == "sent" and counts.get(user) == 1, user
    status = await cli(env, "--status")
    assert "broadcast 1: done" in status.stdout and f"blocked {len(BLOCKED)}" in status.stdout, status.stdout
    button = next(c for c in fake.sent("sendMessage") if "comment BERT" in c.params.get("text", ""))
    assert button.params["reply_markup"]["inline_keyboard"][0][0]["callback_data"] == "guide:mlm"
    assert "&lt;3 &amp; more" in button.params["text"]  # the creator's text, shown as written


async def test_retention_removes_subscriptions_and_a_cancelled_broadcast_sends_no_more(tmp_path: Path) -> None:
    from datetime import timedelta

    from bot.storage import Repository

    url = f"sqlite+aiosqlite:///{tmp_path}/r.sqlite3"
    await seed_subscribers(url)
    database = Database(url)
    live_bot_repo = Repository(database)
    try:
        broadcast_id, queued = await live_bot_repo.broadcasts.create("hello", None)
        assert queued == len(SUBSCRIBERS) and (await live_bot_repo.broadcasts.cancel()).state == "cancelled"
        assert (
            await live_bot_repo.broadcasts.next_recipients() == []
        )  # a cancelled broadcast has nobody left to send to
        await live_bot_repo.users.forget_inactive(datetime.now(timezone.utc) + timedelta(days=1))  # nobody seen since
        assert await live_bot_repo.broadcasts.subscribers() == 0
        assert (await live_bot_repo.broadcasts.progress(broadcast_id)).counts == {}  # their recipient rows went too
    finally:
        await database.close()


async def test_an_admin_broadcasts_from_the_chat_with_a_preview_and_its_progress(
    fake: FakeTelegram, bert_dir: Path, tmp_path: Path
) -> None:
    from tests.support.bot_harness import bot_settings, running_bot

    settings = bot_settings(fake, bert_dir, tmp_path, admin_user_ids="900", broadcast_per_second=30)
    fans = [fake.user(user_id) for user_id in (701, 702, 703)]
    admin = fake.user(900)
    async with running_bot(settings, fake):
        for fan in fans:
            await fake.send_text(fan, "/subscribe")
        await fake.wait_for(lambda f: all(f.sent("sendMessage", fan["id"]) for fan in fans), timeout=30)
        await asyncio.sleep(1.5)  # the writer has them (a preview counts who is subscribed now)
        await fake.send_text(fans[0], "/broadcast nope")
        await fake.wait_for(lambda f: any("Only the bot's admins" in m["text"] for m in bot_messages(f, 701)), 30)
        await fake.send_text(admin, "/broadcast New video: comment <BERT> & get the sheet!")
        await fake.wait_for(lambda f: bot_messages(f, 900), timeout=30)
        (preview,) = bot_messages(fake, 900)
        assert "goes to 3 people" in preview["text"] and "comment <BERT> & get the sheet!" in preview["text"]
        (send, cancel) = keyboard(preview)[0]
        assert send["text"] == "✅ Send it to 3" and cancel["callback_data"].startswith("bc:no:")
        fake.too_many_requests, fake.server_errors = 2, 2  # Telegram: 429 twice, then 502 twice: waited, tried again
        await fake.press(admin, preview, send["callback_data"])
        await fake.wait_for(lambda f: "done" in f.stored(900, preview["message_id"]).get("text", ""), timeout=60)
        await fake.press(admin, preview, send["callback_data"])  # a second press sends nothing more
        await fake.settle(1.0)
    assert "✅ 3 sent" in fake.stored(900, preview["message_id"])["text"]
    for fan in fans:
        got = [m for m in bot_messages(fake, fan["id"]) if "comment <BERT>" in m.get("text", "")]
        assert len(got) == 1, fan["id"]
