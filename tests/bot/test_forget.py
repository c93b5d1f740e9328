"""/forget means everything: a person does all a person can (the guide, a prediction, a tap, the quiz, inline
mode, a comment under a channel post, a language choice, a chart still being drawn when they confirm), with a
word nobody else uses; after /forget, neither that word nor their id is in any table (dead letters included), in
any file (SQLite's own included), or in any log line written at DEBUG, while another person's rows remain. The
real bot, the fake Bot API, a real SQLite file."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import sqlite3
from datetime import datetime, timezone
from pathlib import Path

from bot.logs import UpdateFields, formatter
from bot.storage.dead_letters import dead_letter_path_for
from tests.support.bot_harness import bot_settings, eventually, running_bot
from tests.support.chats import bot_messages, lesson_started, wait_until_said
from tests.support.fake_telegram import FakeTelegram, parse_html
from tests.support.held_model import HeldModel

WORD = "zanzibarquux"  # in everything Zed types, and in his username
ZED, AMY = 918_273_645, 918_273_646
GROUP = {"id": -1001555000333, "type": "supergroup", "title": "Discussion"}
CHANNEL = {"id": -1001555000444, "type": "channel", "title": "Creator"}


def dump(database: Path) -> list[tuple[str, tuple]]:
    """Every row of every table, as (table, row)."""
    connection = sqlite3.connect(database)
    try:
        tables = [r[0] for r in connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        return [(table, row) for table in tables for row in connection.execute(f'SELECT * FROM "{table}"')]
    finally:
        connection.close()


def _files_mentioning(folder: Path, word: bytes) -> list[Path]:
    """Files whose bytes hold ``word``: the database, its write-ahead log, anything written beside them."""
    return [path for path in folder.rglob("*") if path.is_file() and word in path.read_bytes().lower()]


def mentions(value: object, person: int) -> bool:
    text = json.dumps(value, default=str) if not isinstance(value, str) else value
    return WORD in text.lower() or str(person) in text


async def test_forget_leaves_no_trace_in_any_table_file_or_log(fake: FakeTelegram, bert_dir: Path, tmp_path: Path):
    log_lines = io.StringIO()
    handler = logging.StreamHandler(log_lines)
    handler.setFormatter(formatter("json"))  # as LOG_FORMAT=json writes them, with each update's fields
    handler.addFilter(UpdateFields())
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)  # LOG_LEVEL=DEBUG
    settings = bot_settings(fake, bert_dir, tmp_path)
    database = Path(settings.database_url.split("///", 1)[1])
    # Writes the database refused, in the file an older version kept beside the database (taken in at start).
    old_letters = dead_letter_path_for(settings.database_url)
    old_letters.write_text(
        "".join(
            json.dumps({"failed_at": datetime.now(timezone.utc).isoformat(), "error": "DataError",
                        "type": "InteractionEntry", "user_id": person,
                        "write": {"user": {"id": person}, "input_text": text}}) + "\n"
            for person, text in ((ZED, f"the {WORD} [MASK]"), (AMY, "the amy [MASK]"))
        )
    )  # fmt: skip
    model = HeldModel(settings, held=False)
    try:
        async with running_bot(settings, fake, model=model) as repo:
            zed = fake.user(ZED, "Zed", username=f"zed_{WORD}")
            amy = fake.user(AMY, "Amy")
            await fake.send_text(amy, "The amy sat on the [MASK].")
            await fake.send_text(zed, "/start")
            await fake.send_text(zed, f"MLM {WORD}")
            await fake.wait_for(lambda f: lesson_started(f, ZED), timeout=30)
            await fake.send_text(zed, f"The {WORD} sat on the [MASK].")
            # Answered before the tap: a press while the person's prediction runs is "still working on it".
            await wait_until_said(fake, ZED, "Best guess")
            await fake.send_text(zed, f"{WORD} likes green apples")  # no mask: a button per word
            await wait_until_said(fake, ZED, "tap a word")
            offer = next(m for m in bot_messages(fake, ZED) if "tap a word" in m.get("text", ""))
            await fake.press(zed, offer, offer["reply_markup"]["inline_keyboard"][0][0]["callback_data"])
            await wait_until_said(fake, ZED, "I hid")
            await fake.send_text(zed, "/quiz")
            await fake.wait_for(lambda f: bool(f.sent("sendPoll", ZED)), timeout=30)
            poll = [m for m in fake._messages.values() if m["chat"]["id"] == ZED and "poll" in m][-1]
            await fake.answer_poll(zed, poll["poll"]["id"], [0])
            await fake.wait_for(lambda f: len(f.sent("sendPoll", ZED)) >= 2, timeout=30)
            await fake.inline(zed, f"{WORD} is a [MASK]")
            post = fake.message(
                GROUP, fake.user(777000, "Telegram"), "New video: comment MLM", is_automatic_forward=True,
                sender_chat=CHANNEL, forward_origin={"type": "channel", "date": 0, "chat": CHANNEL, "message_id": 5},
            )  # fmt: skip
            await fake.push("message", post)
            await fake.push(
                "message",
                fake.message(GROUP, zed, f"MLM {WORD}", reply_to_message=post, message_thread_id=post["message_id"]),
            )
            await fake.wait_for(lambda f: lesson_started(f, ZED, 2), timeout=30)  # the guide by DM
            await fake.send_text(zed, "/language hinglish")
            # A chart still being drawn when Zed confirms: its row must not come back afterwards.
            await fake.send_text(zed, f"the slow {WORD} sat on the [MASK].")
            await fake.wait_for(lambda f: bool(f.sent("answerInlineQuery")), timeout=30)
            await eventually(lambda: _has(repo, "language", ZED), 15)
            answer = await _answer_to(fake, f"the slow {WORD}")
            model.gate.clear()
            await fake.press(zed, answer, "chart")
            await _until(lambda: model.waiting == 1)
            assert mentions([row for _, row in dump(database)], ZED), "Zed's traces are there before /forget"

            await fake.send_text(zed, "/forget")
            await fake.wait_for(
                lambda f: any("yes" in str(m.get("reply_markup")).lower() for m in bot_messages(f, ZED))
            )
            question = next(m for m in reversed(bot_messages(fake, ZED)) if "forget:yes" in str(m.get("reply_markup")))
            await fake.press(zed, question, "forget:yes")
            await fake.wait_for(
                lambda f: any("Ho gaya" in parse_html(c.params["text"]) for c in f.sent("editMessageText"))
            )
            model.gate.set()  # the chart is drawn and sent now, after the deletion
            await fake.wait_for(lambda f: bool(f.sent("sendPhoto", ZED)), timeout=30)
            # Amy's next row is written after anything Zed's chart handed over (the writer keeps the order).
            await fake.send_text(amy, "The amy ran to the [MASK].")
            await eventually(lambda: _count(repo, AMY, "prediction", 2), 15)

            rows = dump(database)
            assert [(table, row) for table, row in rows if mentions(row, ZED)] == []
            assert {table for table, row in rows if mentions(row, AMY)} >= {"users", "interactions", "inbox"}
            assert [r["user_id"] for r in await repo.dead_letters.records()] == [AMY]
            assert not old_letters.exists()
            assert not await asyncio.to_thread(_files_mentioning, tmp_path, WORD.encode())

            # An old tap button of Zed's no longer reveals the sentence it was offered for.
            before = len(fake.sent("sendMessage", ZED))
            await fake.press(zed, offer, offer["reply_markup"]["inline_keyboard"][0][1]["callback_data"])
            await fake.wait_for(lambda f: len(f.sent("sendMessage", ZED)) > before, timeout=15)
            assert not any(WORD in parse_html(c.params["text"]) for c in fake.sent("sendMessage", ZED)[before:])
    finally:
        root.removeHandler(handler)
        root.setLevel(level)
    lines = log_lines.getvalue()
    assert "update" in lines and '"user": "' in lines, "the log was written, with a pseudonym for each person"
    assert [line for line in lines.splitlines() if mentions(line, ZED)] == []


async def _answer_to(fake: FakeTelegram, start: str) -> dict:
    await fake.wait_for(
        lambda f: any(m.get("reply_to_message", {}).get("text", "").startswith(start) for m in bot_messages(f, ZED)),
        timeout=30,
    )
    return next(m for m in bot_messages(fake, ZED) if m.get("reply_to_message", {}).get("text", "").startswith(start))


async def _until(check, timeout: float = 15.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not check():
        assert loop.time() < deadline, "timed out"
        await asyncio.sleep(0.05)


async def _has(repo, kind: str, user_id: int) -> bool:
    return any(r.kind == kind and r.user_id == user_id for r in await repo.interactions.all())


async def _count(repo, user_id: int, kind: str, count: int) -> bool:
    return sum(r.kind == kind and r.user_id == user_id for r in await repo.interactions.all()) >= count
