"""The inbox: updates stored before Telegram is told they were received, replayed after a crash unless too old,
never handed on twice."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from pathlib import Path

import sqlalchemy as sa

from bot.storage import Database, Repository
from tests.bot_harness import bot_settings, running_bot
from tests.fake_telegram import FakeTelegram


async def test_store_keeps_each_update_once(tmp_path: Path) -> None:
    database = Database(f"sqlite+aiosqlite:///{tmp_path}/inbox.sqlite3")
    await database.migrate()
    inbox = Repository(database).inbox
    assert await inbox.store([(1, "{}", None), (2, "{}", None)]) == {1, 2}
    assert await inbox.store([(2, "{}", None), (3, "{}", None)]) == {3}, "a re-sent update is not handed on again"
    assert [row.update_id for row in await inbox.unfinished()] == [1, 2, 3]
    await database.close()


async def test_unfinished_updates_are_answered_after_a_restart_unless_too_old(bert_dir: Path, tmp_path: Path) -> None:
    fake = FakeTelegram()
    async with fake.running():
        settings = bot_settings(fake, bert_dir, tmp_path, inbox_max_age_s=600)
        database = Database(settings.database_url)
        await database.migrate()
        inbox = Repository(database).inbox
        fresh = {"update_id": 50, "message": fake.message(fake.private_chat(fake.user(71)), fake.user(71), "MLM")}
        stale = {"update_id": 51, "message": fake.message(fake.private_chat(fake.user(72)), fake.user(72), "MLM")}
        press = {
            "update_id": 52,
            "callback_query": {"id": "q", "from": fake.user(73), "chat_instance": "1", "data": "more"},
        }
        await inbox.store([(50, json.dumps(fresh), None), (51, json.dumps(stale), None), (52, json.dumps(press), None)])
        async with database.engine.begin() as connection:
            old = datetime.now(timezone.utc) - timedelta(minutes=20)
            await connection.execute(sa.text("UPDATE inbox SET received_at = :old WHERE update_id = 51"), {"old": old})
            a_minute = datetime.now(timezone.utc) - timedelta(minutes=1)  # too late to answer a button press
            await connection.execute(sa.text("UPDATE inbox SET received_at = :t WHERE update_id = 52"), {"t": a_minute})
        async with running_bot(settings, fake):
            await fake.wait_for(lambda f: bool(f.sent("sendDocument", 71)))  # the guide, from the stored update
            await fake.settle(1.0)
        assert not fake.sent("sendMessage", 72), "an update that waited 20 minutes is not answered late"
        statuses = {row.update_id: row.status for row in await _all(database)}
        assert statuses == {50: "done", 51: "expired", 52: "expired"}
        assert not fake.sent("answerCallbackQuery")
        await database.close()


async def _all(database: Database):
    from bot.storage.tables import InboxUpdate

    async with database.sessions() as session:
        return list((await session.scalars(sa.select(InboxUpdate))).all())


async def test_a_locked_database_pauses_polling_but_never_ends_it(bert_dir: Path, tmp_path: Path) -> None:
    """The inbox cannot store a batch while another process holds the write lock past the busy timeout (5 s):
    the batch is not confirmed (python-telegram-bot logs the failure and keeps its offset), polling goes on, the
    batch is fetched again, and the message is answered once the lock is gone."""
    import asyncio
    import threading

    from tests.test_storage import hold_write_lock

    fake = FakeTelegram()
    async with fake.running():
        settings = bot_settings(fake, bert_dir, tmp_path)
        async with running_bot(settings, fake):
            locked = threading.Event()
            holder = threading.Thread(target=hold_write_lock, args=(tmp_path / "bot.sqlite3", 7.0, locked))
            holder.start()
            await asyncio.to_thread(locked.wait)
            await fake.send_text(fake.user(74), "MLM")
            await asyncio.to_thread(holder.join)
            await fake.wait_for(lambda f: bool(f.sent("sendDocument", 74)), timeout=30)


async def test_finished_updates_are_pruned_pending_ones_kept(tmp_path: Path) -> None:
    from bot.storage.repository import UpdateDone, write_all

    database = Database(f"sqlite+aiosqlite:///{tmp_path}/inbox.sqlite3")
    await database.migrate()
    inbox = Repository(database).inbox
    await inbox.store([(1, "{}", None), (2, "{}", None), (3, "{}", None)])
    await write_all(database, [UpdateDone(1, datetime.now(timezone.utc)), UpdateDone(3, datetime.now(timezone.utc))])
    async with database.engine.begin() as connection:
        await connection.execute(sa.text("UPDATE inbox SET received_at = :t WHERE update_id IN (1, 2)"),
                                 {"t": datetime.now(timezone.utc) - timedelta(days=2)})  # fmt: skip
    assert await inbox.prune(datetime.now(timezone.utc) - timedelta(days=1)) == 1  # 1: done and old
    assert [row.update_id for row in await inbox.unfinished()] == [2]  # pending stays, however old
    await database.close()
