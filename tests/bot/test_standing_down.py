"""How the active process stops: a graceful stop is not held up by its own jobs, a lost lock cancels instead of
draining (the process that took over replays the same updates), a lock lost while the model loaded is noticed
before serving, and a standby's /healthz says when no process is active. The real bot, the fake Bot API, a real
SQLite file; the lock is a stand-in where the test decides when it is lost."""

from __future__ import annotations

import asyncio
import errno
import json
import logging
from pathlib import Path

import pytest

from bot import runner
from bot.http.health import Health
from bot.storage import Database, Repository
from bot.storage.leader import FileLeadership, Leadership, UnusableLock
from tests.support.bot_harness import bot_settings
from tests.support.chats import update_body
from tests.support.fake_telegram import FakeTelegram, parse_html
from tests.support.held_model import HeldModel


class Losable(Leadership):
    """Held from the start; ``lost`` set: the database says another process has it now."""

    def __init__(self, *, lost_during_load: bool = False) -> None:
        self.lost = asyncio.Event()
        self.free = asyncio.Event()  # a standby may take it (after it was lost during the load)
        self.lost_during_load = lost_during_load
        self.confirmed_once = False

    async def try_acquire(self) -> bool:
        if self.held:
            return True
        if self.lost_during_load and self.confirmed_once and not self.free.is_set():
            return False
        self.held = True
        return True

    async def confirm(self) -> bool:
        self.confirmed_once = True
        if self.lost_during_load and not self.free.is_set():
            self.held = False
        return self.held

    async def watch(self) -> None:
        await self.lost.wait()


async def _serving(fake: FakeTelegram, settings, lock: Leadership, monkeypatch, model=None) -> asyncio.Task:
    monkeypatch.setattr(runner, "leadership_for", lambda url: lock)
    stop = asyncio.Event()
    task = asyncio.create_task(runner.serve(settings, stop, model=model))
    task.stop = stop  # type: ignore[attr-defined]
    return task


async def test_a_graceful_stop_is_not_held_up_by_updates_other_processes_store(
    fake: FakeTelegram, bert_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog
) -> None:
    """A standby (webhook mode behind a load balancer) keeps storing updates for the active one to adopt. While the
    stop waited for an update in progress, the adopt job went on handing stored ones to the queue that python-
    telegram-bot's stop() waits to see drained, behind its stop signal, where nothing takes them: the stop took the
    whole budget."""
    caplog.set_level(logging.INFO)
    settings = bot_settings(fake, bert_dir, tmp_path, shutdown_budget_s=12)
    model = HeldModel(settings)
    serving = await _serving(fake, settings, Leadership(), monkeypatch, model=model)
    await fake.wait_for(lambda f: bool(f.sent("deleteWebhook")), timeout=60)
    elsewhere = Repository(Database(settings.database_url))
    stored = 0

    async def another_process_stores() -> None:
        nonlocal stored
        while True:
            stored += 1
            text = "slow: the cat sat on the [MASK]." if stored == 1 else "The cat sat on the [MASK]."
            body = update_body(fake, 5_000 + stored, text, 900_000 + stored)
            await elsewhere.inbox.store([(900_000 + stored, json.dumps(body), 5_000 + stored)])
            await asyncio.sleep(0.1)

    storing = asyncio.create_task(another_process_stores())
    loop = asyncio.get_running_loop()
    try:
        await fake.wait_for(lambda f: model.waiting == 1 and len(f.sent("sendMessage")) >= 3, timeout=30)
        serving.stop.set()  # type: ignore[attr-defined]
        await asyncio.sleep(2.5)  # the stop waits for the update in progress (rightly), the adopt job turns
        model.gate.set()
        released = loop.time()
        await asyncio.wait_for(serving, 30)
        took = loop.time() - released
    finally:
        storing.cancel()
        await elsewhere.db.close()
    assert "budget ran out" not in caplog.text
    assert took < 4, f"the stop went on {took:.1f} s after the last update in progress finished"


async def test_a_lost_lock_cancels_what_it_handles_instead_of_draining_it(
    fake: FakeTelegram, bert_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The process that took over replays the unfinished updates: this one must not answer them too."""
    settings = bot_settings(fake, bert_dir, tmp_path, shutdown_budget_s=8)
    model = HeldModel(settings)
    lock = Losable()
    serving = await _serving(fake, settings, lock, monkeypatch, model=model)
    await fake.wait_for(lambda f: bool(f.sent("deleteWebhook")), timeout=60)
    held = await fake.send_text(fake.user(6_001), "slow: the cat sat on the [MASK].")
    for _ in range(500):  # the model counts, it does not tell
        if model.waiting:
            break
        await asyncio.sleep(0.02)
    lock.lost.set()
    loop = asyncio.get_running_loop()
    began = loop.time()
    with pytest.raises(runner.LostLeadership):
        await asyncio.wait_for(serving, 30)
    took = loop.time() - began
    model.gate.set()
    await asyncio.sleep(0.5)
    assert model.cancelled == [held["text"]], "the model call was cancelled, not waited for"
    assert not [c for c in fake.sent("sendMessage", 6_001) if "Best guess" in parse_html(c.params["text"])]
    assert took < 3, f"standing down took {took:.1f} s"
    repo = Repository(Database(settings.database_url))
    try:
        pending = {row.user_id for row in await repo.inbox.unfinished()}
    finally:
        await repo.db.close()
    assert 6_001 in pending, "left in the inbox for the process that is active now"


async def test_a_lock_lost_while_the_model_loaded_is_noticed_before_serving(
    fake: FakeTelegram, bert_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog
) -> None:
    caplog.set_level(logging.INFO)
    settings = bot_settings(fake, bert_dir, tmp_path)
    lock = Losable(lost_during_load=True)
    serving = await _serving(fake, settings, lock, monkeypatch)
    try:
        for _ in range(600):
            if "standing by instead" in caplog.text:
                break
            assert not serving.done(), serving.exception()
            await asyncio.sleep(0.05)
        assert "standing by instead" in caplog.text
        await asyncio.sleep(1.5)
        assert not fake.sent("deleteWebhook"), "a standby does not poll"
        lock.free.set()  # the other process is gone: this one takes over
        await fake.wait_for(lambda f: bool(f.sent("deleteWebhook")), timeout=30)
    finally:
        serving.stop.set()  # type: ignore[attr-defined]
        await asyncio.wait_for(serving, 30)


async def test_a_standbys_healthz_says_when_no_process_is_active(tmp_path: Path) -> None:
    class Nobody(Leadership):
        async def holder(self) -> str | None:
            return None

    class Someone(Leadership):
        async def holder(self) -> str | None:
            return "PostgreSQL session 42 (mlm-bot leader lock, from 10.0.0.5)"

    class Model:
        async def ready(self) -> None:
            return None

    database = Database(f"sqlite+aiosqlite:///{tmp_path}/bot.sqlite3")
    try:
        checks = {}
        for lock in (Nobody(), Someone()):
            health = Health(database, Model(), webhook=False, standby=True, model_started=True, leader=lock)
            checks[type(lock).__name__] = await health.check()
    finally:
        await database.close()
    healthy, nobody = checks["Nobody"]
    assert not healthy and "no process holds the active lock" in nobody["updates"]
    healthy, someone = checks["Someone"]
    assert healthy and "PostgreSQL session 42" in someone["updates"]


async def test_no_soft_lock_where_the_file_system_has_no_flock(tmp_path: Path, monkeypatch) -> None:
    """filelock 4 falls back to a "soft" lock (a marker file) without flock; a crashed holder would keep it for
    ever. The bot refuses to start there instead, saying why."""

    import fcntl

    def no_flock(fd: int, operation: int) -> None:  # what such a file system's flock(2) answers
        raise OSError(errno.ENOSYS, "Function not implemented")

    monkeypatch.setattr(fcntl, "flock", no_flock)  # the call every filelock 4.x makes, whatever its internals
    lock = FileLeadership(tmp_path / "bot.sqlite3.lock")
    with pytest.raises(UnusableLock, match="without flock"):
        await lock.try_acquire()
    assert not lock.held


async def test_a_standby_leaves_the_mini_apps_api_to_the_active_process(
    fake: FakeTelegram, bert_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog
) -> None:
    """A standby's HTTP server is up (its /healthz), but it has no writer running and no share of the chat's
    budget: its Mini App API says "busy, try again" (503, Retry-After), logs nothing as an error, counts nothing."""
    from httpx import AsyncClient

    from tests.support.bot_harness import free_port
    from tests.support.fake_telegram import TOKEN
    from tests.support.mini_app import signed_init_data

    class Taken(Leadership):
        async def try_acquire(self) -> bool:
            return False

        async def holder(self) -> str | None:
            return "another process"

    caplog.set_level(logging.INFO)
    port = free_port()
    settings = bot_settings(fake, bert_dir, tmp_path, mini_app_url="https://bot.example.com/app", metrics_port=port)
    serving = await _serving(fake, settings, Taken(), monkeypatch)
    try:
        async with AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
            for _ in range(600):
                if "standing by" in caplog.text:
                    break
                await asyncio.sleep(0.05)
            signed = {"Authorization": f"tma {signed_init_data(TOKEN, 4242)}"}
            reply = await http.post("/app/api/fill-mask", json={"text": "The cat sat on the [MASK]."}, headers=signed)
            health = await http.get("/healthz")
    finally:
        serving.stop.set()  # type: ignore[attr-defined]
        await asyncio.wait_for(serving, 30)
    assert reply.status_code == 503 and reply.headers["retry-after"] == "1"
    assert reply.json()["code"] == "standby" and "try again" in reply.json()["error"]
    assert health.status_code == 200 and "another process" in health.json()["checks"]["updates"]
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
