"""Admin statistics, /forget, retention and shutdown, end to end (real bot, fake Bot API, real SQLite files)."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import os
import signal
import sqlite3
import struct
import sys
import threading
import zlib
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from bot.storage import Database, Repository
from bot.storage.writes import InteractionEntry, UserInfo
from tests.support.bot_harness import bot_settings, built_application, running_bot
from tests.support.chats import GROUP, automatic_forward, comment
from tests.support.database import hold_write_lock
from tests.support.fake_telegram import TOKEN, FakeTelegram, parse_html
from tests.support.processes import MLM_BOT, bot_process_env, start_bot_process

ADMIN = 4242


def assert_png(data: bytes) -> tuple[int, int]:
    """A real PNG: signature, an IHDR chunk with a valid CRC; returns (width, height)."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    length, kind = struct.unpack(">I4s", data[8:16])
    assert kind == b"IHDR" and length == 13
    body = data[16 : 16 + length]
    assert struct.unpack(">I", data[16 + length : 20 + length])[0] == zlib.crc32(kind + body)
    assert data.endswith(b"IEND\xaeB`\x82")
    return struct.unpack(">II", body[:8])


async def seed(url: str, entries: list[InteractionEntry]) -> None:
    database = Database(url)
    await database.migrate()
    await Repository(database).interactions.log_many(entries)
    await database.close()


async def test_stats_for_admins_with_a_chart_and_a_polite_no_for_others(
    fake: FakeTelegram, bert_dir: Path, tmp_path: Path
) -> None:
    settings = bot_settings(fake, bert_dir, tmp_path, admin_user_ids=str(ADMIN))
    now = datetime.now(timezone.utc)
    await seed(settings.database_url, [
        InteractionEntry("guide", UserInfo(1), trigger="MLM", created_at=now - timedelta(hours=1)),
        InteractionEntry("prediction", UserInfo(2), latency_ms=12, predictions=[[{"token": "mat"}]], created_at=now),
    ])  # fmt: skip
    async with running_bot(settings, fake):
        await fake.send_text(fake.user(7), "/stats")
        await fake.wait_for(lambda f: bool(f.sent("sendMessage", 7)))
        assert "only for the bot's admins" in parse_html(fake.sent("sendMessage", 7)[0].params["text"])

        await fake.send_text(fake.user(ADMIN), "The cat sat on the [MASK].")
        await fake.wait_for(lambda f: bool(f.sent("sendMessage", ADMIN)))
        await fake.send_text(fake.user(ADMIN), "/stats")
        await fake.wait_for(lambda f: bool(f.sent("sendPhoto", ADMIN)))
    report, posts = (parse_html(c.params["text"]) for c in fake.sent("sendMessage", ADMIN)[-2:])
    assert posts.startswith("📮 Per post: none yet")  # then each post's funnel (tests/bot/test_funnel.py)
    assert "Guides sent: 1" in report and "Predictions: 2" in report and "People: 3" in report
    assert "mat (1)" in report and "MLM (1)" in report and "p50" in report
    photo = fake.sent("sendPhoto", ADMIN)[0].params["photo"]
    width, height = assert_png(photo["content"])
    assert width > 300 and height > 200


async def test_forget_asks_first_then_deletes_everything(fake: FakeTelegram, bert_dir: Path, tmp_path: Path) -> None:
    settings = bot_settings(fake, bert_dir, tmp_path)
    async with running_bot(settings, fake) as repo:
        ann = fake.user(55)
        await fake.send_text(ann, "The cat sat on the [MASK].")
        await fake.wait_for(lambda f: bool(f.sent("sendMessage", 55)))
        await fake.send_text(ann, "/forget")
        await fake.wait_for(lambda f: len(f.sent("sendMessage", 55)) >= 2)
        confirm = fake.sent("sendMessage", 55)[1]
        assert "Delete everything" in parse_html(confirm.params["text"])
        question = [m for m in fake._messages.values() if m["chat"]["id"] == 55 and m.get("reply_markup")][-1]

        await fake.press(ann, question, "forget:no")
        await fake.wait_for(lambda f: bool(f.sent("editMessageText", 55)))
        assert "Nothing was deleted" in parse_html(fake.sent("editMessageText", 55)[0].params["text"])
        await asyncio.sleep(0.3)
        assert await repo.users.get(55) is not None

        # The answer took the buttons away; asked again, the question has them again.
        assert not fake.stored(55, question["message_id"]).get("reply_markup")
        await fake.send_text(ann, "/forget")
        await fake.wait_for(lambda f: len(f.sent("sendMessage", 55)) >= 3)
        question = [m for m in fake._messages.values() if m["chat"]["id"] == 55 and m.get("reply_markup")][-1]
        await fake.press(ann, question, "forget:yes")
        await fake.wait_for(lambda f: len(f.sent("editMessageText", 55)) >= 2)
        assert "everything I stored about you is deleted" in parse_html(
            fake.sent("editMessageText", 55)[1].params["text"]
        )
        assert await repo.users.get(55) is None
        assert [r for r in await repo.interactions.all() if r.user_id == 55] == []


async def test_retention_runs_at_start_up_and_daily(fake: FakeTelegram, bert_dir: Path, tmp_path: Path) -> None:
    settings = bot_settings(fake, bert_dir, tmp_path, retention_days=30)
    now = datetime.now(timezone.utc)
    await seed(settings.database_url, [
        InteractionEntry("prediction", UserInfo(1), input_text="old [MASK]", predictions=[[{"token": "a"}]],
                         created_at=now - timedelta(days=31)),
        InteractionEntry("prediction", UserInfo(1), input_text="new [MASK]", predictions=[[{"token": "b"}]],
                         created_at=now - timedelta(days=29)),
    ])  # fmt: skip
    async with running_bot(settings, fake) as repo:
        for _ in range(100):
            rows = await repo.interactions.all()
            if rows[0].input_text is None:
                break
            await asyncio.sleep(0.05)
        assert [r.input_text for r in rows] == [None, "new [MASK]"]
        assert [r.top_prediction for r in rows] == [None, "b"]


@pytest.mark.parametrize("stop_signal", [signal.SIGTERM, signal.SIGINT])
async def test_a_stop_signal_mid_burst_loses_no_answered_interaction(
    fake: FakeTelegram, bert_dir: Path, tmp_path: Path, stop_signal: signal.Signals
) -> None:
    database = tmp_path / "bot.sqlite3"
    env = bot_process_env(fake, bert_dir, database)
    process = await asyncio.create_subprocess_exec(
        MLM_BOT, "run", env=env, cwd=tmp_path, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    try:
        await fake.wait_for(lambda f: bool(f.sent("deleteWebhook")), timeout=60)
        users = [fake.user(2000 + i) for i in range(60)]
        for user in users:
            await fake.send_text(user, f"Person {user['id']} says the cat sat on the [MASK].")
        await fake.wait_for(lambda f: sum(bool(f.sent("sendMessage", u["id"])) for u in users) >= 10, timeout=60)
        # Someone else holds the database's write lock for 2 s as the signal comes: the log has to wait for it.
        locked = threading.Event()
        holder = threading.Thread(target=hold_write_lock, args=(database, 2.0, locked))
        holder.start()
        await asyncio.to_thread(locked.wait)
        process.send_signal(stop_signal)
        output = (await asyncio.wait_for(process.communicate(), 60))[0].decode()
    finally:
        if process.returncode is None:
            process.kill()
    await asyncio.to_thread(holder.join)
    assert process.returncode == 0, output
    assert TOKEN not in output
    answered = {u["id"] for u in users if fake.sent("sendMessage", u["id"])}
    rows = sqlite3.connect(database).execute("SELECT user_id, input_text FROM interactions WHERE kind='prediction'")
    logged = {user_id for user_id, _ in rows}
    assert answered and answered <= logged, f"answered but not logged: {sorted(answered - logged)}"


def run_cli(*args: str, url: str) -> str:
    import subprocess

    env = dict(os.environ, DATABASE_URL=url)
    done = subprocess.run([MLM_BOT, *args], capture_output=True, text=True, env=env, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    return done.stdout


async def test_stats_and_export_commands(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path}/log.sqlite3"
    now = datetime.now(timezone.utc)
    await seed(url, [
        InteractionEntry("guide", UserInfo(1), trigger="start:-100:7", created_at=now - timedelta(days=2),
                         guide="mlm", post="-100:7"),
        InteractionEntry("prediction", UserInfo(2), input_text="a, \"quoted\" [MASK]", latency_ms=40,
                         predictions=[[{"token": "mat", "score": 0.5}]], created_at=now - timedelta(days=1)),
        InteractionEntry("prediction", UserInfo(3), input_text="old", created_at=now - timedelta(days=20)),
    ])  # fmt: skip
    chart = tmp_path / "chart.png"
    report = await asyncio.to_thread(run_cli, "stats", "--since", "7", "--png", str(chart), url=url)
    assert "Guides sent: 1" in report and "Predictions: 1" in report and "p50 40 ms" in report
    assert "3 interactions from 3 people" in report
    assert_png(chart.read_bytes())

    rows = list(csv.DictReader(io.StringIO(await asyncio.to_thread(run_cli, "export", "--format", "csv", url=url))))
    assert [r["kind"] for r in rows] == ["guide", "prediction", "prediction"]
    assert (rows[0]["guide"], rows[0]["post"], rows[1]["guide"]) == ("mlm", "'-100:7", "")  # CSV: "-" made text
    assert rows[1]["input_text"] == 'a, "quoted" [MASK]' and json.loads(rows[1]["predictions"])[0][0]["token"] == "mat"
    lines = (await asyncio.to_thread(run_cli, "export", "--format", "jsonl", "--since", "7", url=url)).splitlines()
    assert [json.loads(line)["kind"] for line in lines] == ["guide", "prediction"]
    assert json.loads(lines[1])["top_prediction"] == "mat"
    assert (json.loads(lines[0])["guide"], json.loads(lines[0])["post"]) == ("mlm", "-100:7")  # which guide and post


async def test_retention_is_scheduled_every_day(bert_dir: Path, tmp_path: Path) -> None:
    from bot.app import schedule_jobs

    fake = FakeTelegram()
    fake.url = "http://127.0.0.1:9/bot"  # never contacted: the application is only built
    application, repo = built_application(bot_settings(fake, bert_dir, tmp_path))
    schedule_jobs(application)
    (job,) = application.job_queue.get_jobs_by_name("retention")
    assert job.job.trigger.interval == timedelta(days=1)
    await repo.db.close()


async def test_a_killed_bot_answers_every_request_after_a_restart(
    fake: FakeTelegram, bert_dir: Path, tmp_path: Path
) -> None:
    """SIGKILL in the middle of a burst (no shutdown code runs), a restart on the same database: every request
    gets its answer and its interaction row. The fake forgets confirmed updates, as Telegram does."""
    database = tmp_path / "bot.sqlite3"
    env = bot_process_env(fake, bert_dir, database, LOG_LEVEL="WARNING")

    def start():
        return start_bot_process(fake, env, tmp_path)

    users = [fake.user(3000 + i) for i in range(60)]
    process = await start()
    try:
        for user in users:
            await fake.send_text(user, f"Person {user['id']} says the cat sat on the [MASK].")
        await fake.wait_for(lambda f: sum(bool(f.sent("sendMessage", u["id"])) for u in users) >= 5, timeout=60)
        process.kill()  # SIGKILL: no handler, no flush, no goodbye
        await process.wait()
        before = {u["id"] for u in users if fake.sent("sendMessage", u["id"])}
        still_at_telegram = {u["message"]["from"]["id"] for u in fake._updates if "message" in u}
        # Confirmed to Telegram (so never sent again) yet unanswered: only the inbox can bring these back.
        confirmed_unanswered = {u["id"] for u in users} - before - still_at_telegram
        assert confirmed_unanswered, "the kill must come mid-burst for this test to mean anything"
        process = await start()
        await fake.wait_for(lambda f: all(f.sent("sendMessage", u["id"]) for u in users), timeout=120)
        await fake.settle(1.0)
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
            await asyncio.wait_for(process.communicate(), 60)
    rows = sqlite3.connect(database).execute("SELECT user_id FROM interactions WHERE kind='prediction'")
    assert {u["id"] for u in users} <= {user_id for (user_id,) in rows}
    pending = sqlite3.connect(database).execute("SELECT count(*) FROM inbox WHERE status='pending'").fetchone()[0]
    assert pending == 0


async def test_sigterm_during_a_group_backlog_exits_in_budget_and_the_backlog_follows_the_restart(
    fake: FakeTelegram, bert_dir: Path, tmp_path: Path
) -> None:
    """40 keyword comments under 40 posts of one group: Telegram allows about 20 messages a minute there, so
    replies queue. SIGTERM ends the bot within SHUTDOWN_BUDGET_S with exit 0; the replies still owed are sent
    after the next start."""

    database = tmp_path / "bot.sqlite3"
    env = bot_process_env(fake, bert_dir, database, LOG_LEVEL="WARNING", SHUTDOWN_BUDGET_S="4")

    def start():
        return start_bot_process(fake, env, tmp_path)

    commenters = [fake.user(4000 + i, f"Fan{i}") for i in range(40)]
    fake.never_started.update(u["id"] for u in commenters)
    process = await start()
    try:
        for i, user in enumerate(commenters):
            await comment(fake, user, await automatic_forward(fake, post_id=500 + i), "MLM")
        await fake.wait_for(lambda f: len(f.sent("sendMessage", GROUP["id"])) >= 10, timeout=60)
        process.send_signal(signal.SIGTERM)
        stopped = asyncio.get_running_loop().time()
        output = (await asyncio.wait_for(process.communicate(), 30))[0].decode()
        took = asyncio.get_running_loop().time() - stopped
        assert process.returncode == 0, output
        assert took < 4 + 5, f"the shutdown took {took:.1f} s, over its budget"
        owed = len(commenters) - len(fake.sent("sendMessage", GROUP["id"]))
        assert owed > 0, "the group's allowance must still hold replies back for this test to mean anything"
        process = await start()
        await fake.wait_for(lambda f: len(f.sent("sendMessage", GROUP["id"])) >= len(commenters), timeout=120)
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
            await asyncio.wait_for(process.communicate(), 60)
    named = "".join(c.params["text"] for c in fake.sent("sendMessage", GROUP["id"]))
    assert all(f"tg://user?id={u['id']}" in named for u in commenters), "every commenter got their reply"


async def test_kill_9_while_comment_replies_wait_loses_none_and_doubles_none(
    fake: FakeTelegram, bert_dir: Path, tmp_path: Path
) -> None:
    """30 keyword comments under 30 posts of one group: the group's allowance (about 20 messages a minute) holds
    replies back. The bot is killed (SIGKILL: no shutdown of any kind) while they wait; after the restart every
    commenter is named, and none more than once beyond the one reply that may have been in flight."""

    env = bot_process_env(fake, bert_dir, tmp_path / "bot.sqlite3", LOG_LEVEL="WARNING")
    commenters = [fake.user(4100 + i, f"Fan{i}") for i in range(30)]
    fake.never_started.update(u["id"] for u in commenters)
    process = await start_bot_process(fake, env, tmp_path)
    try:
        for i, user in enumerate(commenters):
            await comment(fake, user, await automatic_forward(fake, post_id=700 + i), "MLM")
        # The group's burst goes out at once, then a reply every 3 s: the kill comes between two of those.
        await fake.wait_for(lambda f: len(f.sent("sendMessage", GROUP["id"])) >= 21, timeout=60)
        await asyncio.sleep(1.0)
        process.kill()
        await asyncio.wait_for(process.communicate(), 30)
        sent_before = len(fake.sent("sendMessage", GROUP["id"]))
        assert sent_before < len(commenters), "replies must still be waiting when the bot dies"
        process = await start_bot_process(fake, env, tmp_path)
        await fake.wait_for(lambda f: len(f.sent("sendMessage", GROUP["id"])) >= len(commenters), timeout=120)
        await fake.settle(3.5)  # a reply every 3 s at the group's pace: nothing more comes
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
            await asyncio.wait_for(process.communicate(), 60)
    named = [c.params["text"] for c in fake.sent("sendMessage", GROUP["id"])]
    counts = [sum(f"tg://user?id={u['id']}" in text for text in named) for u in commenters]
    assert all(count >= 1 for count in counts), "every commenter got their reply"
    assert sum(count > 1 for count in counts) <= 1, "at most the one reply in flight at the kill went twice"


SLOW_LOAD = """
import asyncio, time
from bot import runner
from bot.config import load_settings
from models.serving.client import LocalFillMask

class SlowLoad(LocalFillMask):
    async def start(self):
        await asyncio.to_thread(time.sleep, 120)  # the first start downloads the model: minutes

runner.create_fill_mask_service = SlowLoad
runner.run(load_settings())
"""


async def test_sigterm_while_the_model_loads_ends_within_the_budget(
    fake: FakeTelegram, bert_dir: Path, tmp_path: Path
) -> None:
    """The stop does not wait for a model still loading (a thread nobody can interrupt): the process ends within
    SHUTDOWN_BUDGET_S of the signal, with exit 0."""

    env = bot_process_env(fake, bert_dir, tmp_path / "bot.sqlite3", SHUTDOWN_BUDGET_S="3")
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-c", SLOW_LOAD, env=env, cwd=tmp_path,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    try:
        await fake.wait_for(lambda f: bool(f.sent("getMe")), timeout=60)  # the token is checked: loading now
        await asyncio.sleep(1.0)
        process.send_signal(signal.SIGTERM)
        stopped = asyncio.get_running_loop().time()
        output = (await asyncio.wait_for(process.communicate(), 30))[0].decode()
        took = asyncio.get_running_loop().time() - stopped
    finally:
        if process.returncode is None:
            process.kill()
            await process.communicate()
    assert process.returncode == 0, output[-2000:]
    assert took < 3 + 1, f"{took:.1f} s after SIGTERM, over the 3 s budget"
