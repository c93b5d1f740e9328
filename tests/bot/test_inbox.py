"""The inbox: updates stored before Telegram is told they were received, replayed after a crash unless too old,
never handed on twice."""

from __future__ import annotations

import asyncio
import json
import logging
from datetime import datetime, timedelta, timezone
from pathlib import Path

import sqlalchemy as sa

from bot.storage import Database, Repository
from models.serving.client import LocalFillMask
from tests.support.bot_harness import bot_settings, built_application, running_bot
from tests.support.chats import lesson_started, update_body
from tests.support.database import hold_write_lock
from tests.support.fake_telegram import FakeTelegram


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
            await fake.wait_for(lambda f: lesson_started(f, 71))  # the guide, from the stored update
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
            await fake.wait_for(lambda f: lesson_started(f, 74), timeout=30)


async def test_finished_updates_are_pruned_pending_ones_kept(tmp_path: Path) -> None:
    from bot.storage.writes import UpdateDone, write_all

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


async def test_after_a_crash_with_every_update_stored_polling_moves_on(bert_dir: Path, tmp_path: Path) -> None:
    """A previous run stored three updates and died before Telegram was told: Telegram sends them again, and
    all three are known. They are answered once (by the replay), and polling moves past them: it used to ask
    Telegram and the database for the same batch again and again, at full speed, until a new update came."""
    import asyncio

    fake = FakeTelegram()
    async with fake.running():
        settings = bot_settings(fake, bert_dir, tmp_path)
        database = Database(settings.database_url)
        await database.migrate()
        stored = []
        for person in (81, 82, 83):
            message = fake.message(fake.private_chat(fake.user(person)), fake.user(person), "MLM")
            update_id = await fake.push("message", message)  # not confirmed: Telegram keeps it
            stored.append((update_id, json.dumps({"update_id": update_id, "message": message}), person))
        await Repository(database).inbox.store(stored)
        await database.close()
        async with running_bot(settings, fake):
            await fake.wait_for(lambda f: all(lesson_started(f, p) for p in (81, 82, 83)), timeout=60)
            polls = fake.polls
            await asyncio.sleep(2.0)
            assert fake.polls - polls <= 3, f"{fake.polls - polls} polls in 2 s: a tight loop"
            await fake.settle(0.5)
        assert all(lesson_started(fake, p) and not lesson_started(fake, p, 2) for p in (81, 82, 83))


async def test_a_failing_store_backs_off_with_one_line_and_no_update_in_it(
    bert_dir: Path, tmp_path: Path, monkeypatch, caplog
) -> None:
    import asyncio
    import logging

    from sqlalchemy.exc import OperationalError

    from bot.storage.repository import Inbox

    failures, attempts = 2, []
    real_store = Inbox.store

    async def failing(self, updates):
        if updates and len(attempts) < failures:
            attempts.append(asyncio.get_running_loop().time())
            raise OperationalError("INSERT INTO inbox ...", {"payload": "my private words"}, Exception("disk I/O"))
        return await real_store(self, updates)

    monkeypatch.setattr(Inbox, "store", failing)
    caplog.set_level(logging.INFO)
    fake = FakeTelegram()
    async with fake.running(), running_bot(bot_settings(fake, bert_dir, tmp_path), fake):
        await fake.send_text(fake.user(84), "my private words [MASK] here")
        await fake.wait_for(lambda f: bool(f.sent("sendMessage", 84)), timeout=30)
    lines = [r for r in caplog.records if "could not store" in r.getMessage()]
    assert len(lines) == failures and all(r.levelno == logging.WARNING and not r.exc_info for r in lines)
    assert attempts[1] - attempts[0] >= 0.9, "backed off before asking again"
    assert "my private words" not in caplog.text and not [r for r in caplog.records if r.levelno >= logging.CRITICAL]
    assert len(fake.sent("sendMessage", 84)) == 1


class Poisoned(LocalFillMask):
    """The real model, except that a sentence with "poison" never finishes (the bot is stopped around it)."""

    calls = 0

    async def fill_mask(self, text: str, **kwargs):
        if "poison" in text:
            Poisoned.calls += 1
            await asyncio.Event().wait()
        return await super().fill_mask(text, **kwargs)


async def test_an_update_whose_handling_never_finishes_is_parked_and_only_it(
    bert_dir: Path, tmp_path: Path, caplog, monkeypatch
) -> None:
    """An update that takes the bot down (here: its handling never ends, and each stop leaves it unfinished) is
    handed on at its first run, again with the others at the next start, then alone; at the start after that it is
    parked: logged once with its id and kind, kept in the inbox, never handed on again. Updates around it are
    answered, once."""
    monkeypatch.setattr("bot.updates.inbox.SUSPECT_WAIT_S", 0.5)
    Poisoned.calls = 0
    caplog.set_level(logging.INFO)
    fake = FakeTelegram()
    async with fake.running():
        settings = bot_settings(fake, bert_dir, tmp_path, shutdown_budget_s=2)
        poison_id = None
        for start in range(4):
            async with running_bot(settings, fake, model=Poisoned(settings)) as repo:
                if start == 0:
                    poison_id = (await fake.send_text(fake.user(95), "poison [MASK] here"))["message_id"]
                person = 96 + start
                await fake.send_text(fake.user(person), "The cat sat on the [MASK].")
                await fake.wait_for(lambda f, p=person: bool(f.sent("sendMessage", p)), timeout=30)
                await asyncio.sleep(0.5)
        rows = {row.update_id: row for row in await _all(repo.db)}
    (poison,) = [row for row in rows.values() if "poison" in row.payload]
    assert poison_id is not None and poison.status == "parked" and poison.attempts == 2
    assert Poisoned.calls == 3, "handed on at its first run, with the others at one restart, alone at the next"
    parked = [r for r in caplog.records if r.name == "bot.updates.inbox" and "parked" in r.getMessage()]
    assert len(parked) == 1 and str(poison.update_id) in parked[0].getMessage() and "message" in parked[0].getMessage()
    assert all(len(fake.sent("sendMessage", p)) == 1 for p in (96, 97, 98, 99)), "the others answered once"
    assert not fake.sent("sendMessage", 95)


async def test_after_two_crashes_only_the_update_that_stops_the_bot_is_parked(
    bert_dir: Path, tmp_path: Path, monkeypatch
) -> None:
    """The bot died while it replayed three updates after a crash: each is unfinished and was handed on once
    again. At this start they go one at a time: the two harmless ones are answered, and the poisonous one is the
    only one counted twice (parked at the next start). Parking all three would have dropped two people."""
    monkeypatch.setattr("bot.updates.inbox.SUSPECT_WAIT_S", 0.5)
    Poisoned.calls = 0
    fake = FakeTelegram()
    async with fake.running():
        settings = bot_settings(fake, bert_dir, tmp_path, shutdown_budget_s=2)
        database = Database(settings.database_url)
        await database.migrate()
        inbox = Repository(database).inbox
        texts = {81: "poison [MASK] here", 82: "The cat sat on the [MASK].", 83: "A dog ate the [MASK]."}
        bodies = [update_body(fake, person, text, 60 + n) for n, (person, text) in enumerate(texts.items())]
        await inbox.store([(body["update_id"], json.dumps(body), body["message"]["from"]["id"]) for body in bodies])
        await inbox.count_attempt([60, 61, 62])  # replayed once at the last start, which died again
        async with running_bot(settings, fake, model=Poisoned(settings)):
            await fake.wait_for(lambda f: bool(f.sent("sendMessage", 82) and f.sent("sendMessage", 83)), timeout=30)
        statuses = {row.update_id: (row.status, row.attempts) for row in await _all(database)}
        assert statuses == {60: ("pending", 2), 61: ("done", 2), 62: ("done", 2)}
        async with running_bot(settings, fake, model=Poisoned(settings)):
            await fake.settle(1.0)
        statuses = {row.update_id: row.status for row in await _all(database)}
        await database.close()
    assert statuses == {60: "parked", 61: "done", 62: "done"}
    assert Poisoned.calls == 1
    assert len(fake.sent("sendMessage", 82)) == len(fake.sent("sendMessage", 83)) == 1


async def test_the_updater_polls_through_the_applications_own_bot(bert_dir: Path, tmp_path: Path) -> None:
    """One bot object: the Updater's ``get_updates`` is the inbox's, and the updates it returns are bound to the bot
    that has the defaults (HTML, no link previews) and the rate limiter. No proxy in between."""
    from telegram.ext import ExtBot

    from bot.updates.inbox import InboxBot, install

    fake = FakeTelegram()
    fake.url = "http://127.0.0.1:9/bot"  # never contacted: the application is only built
    application, repo = built_application(bot_settings(fake, bert_dir, tmp_path))
    assert isinstance(application.bot, InboxBot) and isinstance(application.bot, ExtBot)
    assert application.updater is not None and application.updater.bot is application.bot
    assert "__getattr__" not in vars(InboxBot)
    assert application.bot.defaults is not None and application.bot.defaults.parse_mode == "HTML"
    assert application.bot.rate_limiter is not None
    install(application, repo.inbox, handed_on=(shared := {7}))
    assert application.bot.handed_on is shared
    await repo.db.close()
