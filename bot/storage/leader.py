"""One active bot per database, whatever the number of ``mlm-bot run`` processes: the lock the database keeps.

Any number of processes may share one database (two replicas, or a rolling deploy: the new one up before the old
one stops). Exactly one is *active*: it polls Telegram (or hands on webhook deliveries), sends the owed replies
and runs the jobs. The others are hot standbys: their model is loaded, and they ask for the lock every
``POLL_S``; the lock is theirs as soon as the active one stops or dies, so one takes over within a second or
two of that.

The lock is not made here. It is the one the database already has:

- **PostgreSQL**: a session-level advisory lock (``pg_try_advisory_lock``) on a connection of its own, outside
  the pool. The server releases it when the session ends: a ``kill -9`` closes the socket at once; a process cut
  off by the network is dropped by the server's TCP keepalive, set short on this connection (about 11 s). The
  active process checks its connection every ``CHECK_S``; if it cannot confirm the lock for ``LOSE_AFTER_S``
  (shorter than the server's keepalive, so it has stopped acting before anyone else can start), or the lock was
  taken by another process meanwhile (a server restart frees it for whoever asks first), it has lost the lock:
  :meth:`Leadership.watch` returns and the process stands down.
- **SQLite**: an ``flock`` on the file ``<database>.lock`` beside it (``filelock``), which the kernel releases
  when the process ends however it ends. Processes on one host (or containers sharing the folder through a
  bind mount) see it; a network file system may not, so SQLite is for one host.

An in-memory SQLite database is one process's own: no lock.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from pathlib import Path

from filelock import FileLock, Timeout
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncConnection, create_async_engine
from sqlalchemy.pool import NullPool

log = logging.getLogger(__name__)

POLL_S = 1.0  # a standby asks for the lock this often
CHECK_S = 2.0  # the active PostgreSQL process confirms its lock's connection this often
LOSE_AFTER_S = 6.0  # ... and stands down when it could not for this long
# "mlm-bot" as a number: the advisory lock's key (one bot per database; another program would pick another key).
LOCK_KEY = int.from_bytes(b"mlm-bot", "big")
# The server drops a silent session after idle + interval x count seconds: then the lock is free for a standby.
KEEPALIVE = {"tcp_keepalives_idle": "5", "tcp_keepalives_interval": "2", "tcp_keepalives_count": "3"}


class Leadership:
    """No lock at all: the only process (an in-memory database)."""

    held = False

    async def try_acquire(self) -> bool:
        self.held = True
        return True

    async def acquire(self, stop: asyncio.Event) -> bool:
        """Wait for the lock (True), or for ``stop`` (False)."""
        while not stop.is_set():
            if await self.try_acquire():
                return True
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(stop.wait(), POLL_S)
        return False

    async def watch(self) -> None:
        """Returns when the lock is lost (never, for a lock the kernel holds for the process)."""
        await asyncio.Event().wait()

    async def release(self) -> None:
        self.held = False


class FileLeadership(Leadership):
    """An ``flock`` on a file beside the SQLite database."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = FileLock(path, thread_local=False)

    async def try_acquire(self) -> bool:
        if self.held:
            return True
        try:
            self._lock.acquire(timeout=0)  # non-blocking: one flock(2) call
        except Timeout:
            return False
        self.held = True
        return True

    async def release(self) -> None:
        if self.held:
            self._lock.release()
            self.held = False


class PostgresLeadership(Leadership):
    """A session-level advisory lock on a dedicated connection."""

    def __init__(self, url: str) -> None:
        self._engine = create_async_engine(
            url,
            poolclass=NullPool,
            connect_args={
                "command_timeout": CHECK_S * 2,
                "timeout": CHECK_S * 2,
                "server_settings": {**KEEPALIVE, "application_name": "mlm-bot leader lock"},
            },
        )
        self._connection: AsyncConnection | None = None
        self._unreachable_logged = False

    async def try_acquire(self) -> bool:
        if self.held:
            return True
        try:
            if self._connection is None:
                self._connection = await self._engine.connect()
                await self._connection.execution_options(isolation_level="AUTOCOMMIT")
            got = bool(await self._connection.scalar(text("SELECT pg_try_advisory_lock(:key)"), {"key": LOCK_KEY}))
        except Exception as exc:
            await self._drop()
            if not self._unreachable_logged:
                log.warning("cannot ask PostgreSQL for the active-process lock (%s); asking again", type(exc).__name__)
                self._unreachable_logged = True
            return False
        self._unreachable_logged = False
        self.held = got
        return got

    async def _confirm(self) -> bool:
        """The lock is still ours: its session answers (a session-level lock lasts as long as its session)."""
        if self._connection is None:
            return False
        try:
            await asyncio.wait_for(self._connection.execute(text("SELECT 1")), CHECK_S * 2)
            return True
        except Exception:
            await self._drop()
            return False

    async def watch(self) -> None:
        confirmed = time.monotonic()
        while True:
            await asyncio.sleep(CHECK_S)
            if await self._confirm():
                confirmed = time.monotonic()
                continue
            # The session is gone, and the lock with it: ask again (the server may have restarted: free for
            # whoever asks first). Another process holding it now, or no answer for too long: lost.
            self.held = False
            log.warning("the connection that holds the active-process lock broke; asking for the lock again")
            while time.monotonic() - confirmed < LOSE_AFTER_S:
                if await self.try_acquire():
                    log.info("the active-process lock is ours again")
                    confirmed = time.monotonic()
                    break
                if self._connection is not None:  # PostgreSQL answered: another process has it
                    return
                await asyncio.sleep(POLL_S / 2)
            else:
                return

    async def _drop(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(connection.close(), CHECK_S)

    async def release(self) -> None:
        if self.held and self._connection is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(
                    self._connection.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": LOCK_KEY}), CHECK_S
                )
        self.held = False
        await self._drop()
        await self._engine.dispose()


def leadership_for(url: str) -> Leadership:
    """The lock for the database at ``url``."""
    parsed = make_url(url)
    backend = parsed.get_backend_name()
    if backend == "postgresql":
        return PostgresLeadership(url)
    if backend == "sqlite" and parsed.database not in (None, "", ":memory:"):
        database = Path(parsed.database).resolve()
        database.parent.mkdir(parents=True, exist_ok=True)
        return FileLeadership(database.with_name(database.name + ".lock"))
    return Leadership()
