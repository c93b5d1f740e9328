"""One active bot per database, whatever the number of ``mlm-bot run`` processes: the lock the database keeps.

Any number of processes may share one database (two replicas, or a rolling deploy: the new one up before the old
one stops). Exactly one is *active*: it polls Telegram (or hands on webhook deliveries), sends the owed replies
and runs the jobs. The others are hot standbys: their model is loaded, and they ask for the lock every
``POLL_S``; the lock is theirs as soon as the active one stops or dies, so one takes over within a second or
two of that.

The lock is not made here. It is the one the database already has:

- **PostgreSQL**: a session-level advisory lock (``pg_try_advisory_lock``) on a connection of its own, outside
  the pool. The server releases it when the session ends: a ``kill -9`` closes the socket at once; a process cut
  off by the network is dropped by the server's TCP keepalive and ``tcp_user_timeout``, set short on this
  connection (about 11 s). The active process checks every ``CHECK_S`` that ``pg_locks`` shows the lock held by
  its own session (not only that the session answers); if it cannot confirm the lock for ``LOSE_AFTER_S``
  (shorter than the server's keepalive, so it has stopped acting before anyone else can start), or the lock was
  taken by another process meanwhile (a server restart frees it for whoever asks first), it has lost the lock:
  :meth:`Leadership.watch` returns and the process stands down. A pooler in transaction mode (PgBouncer) between
  the bot and PostgreSQL would share the lock's session with other clients: it is detected when the lock is
  first asked for, and the bot refuses to start (:class:`UnusableLock`).
- **SQLite**: an ``flock`` on the file ``<database>.lock`` beside it (``filelock``), which the kernel releases
  when the process ends however it ends. Processes on one host (or containers sharing the folder through a
  bind mount) see it; a network file system may not, so SQLite is for one host, and a file system without
  ``flock`` at all is refused at start-up (never filelock's "soft" lock, which a crash would leave held).

An in-memory SQLite database is one process's own: no lock.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
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
# The server drops a silent session after idle + interval x count seconds (and, with data unacknowledged, after
# tcp_user_timeout milliseconds): then the lock is free for a standby.
KEEPALIVE = {
    "tcp_keepalives_idle": "5", "tcp_keepalives_interval": "2", "tcp_keepalives_count": "3",
    "tcp_user_timeout": "11000",
}  # fmt: skip


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

    async def confirm(self) -> bool:
        """The lock is still ours (after minutes of loading a model, say)."""
        return self.held

    async def holder(self) -> str | None:
        """Who holds the lock, for a standby's /healthz; None if no process does."""
        return "this process" if self.held else None

    async def release(self) -> None:
        self.held = False


class UnusableLock(Exception):
    """The database cannot keep a session-level lock for this process (a pooler in transaction mode between)."""


def _flock(path: Path) -> FileLock:
    """A real ``flock`` or nothing: filelock 4 falls back by default to a "soft" lock (a file that says it is
    held) where the file system has no flock, and a soft lock outlives a crashed holder: no one would ever take
    over. Without flock the bot refuses to start instead (``UnusableLock``)."""
    return FileLock(path, thread_local=False, fallback_to_soft=False)


NO_FLOCK = (
    "the folder of the SQLite database ({folder}) is on a file system without flock() (a network file system?), "
    "so the lock that keeps one bot active cannot work there: put DATABASE_URL's file on a local disk"
)


class FileLeadership(Leadership):
    """An ``flock`` on a file beside the SQLite database."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = _flock(path)

    async def try_acquire(self) -> bool:
        if self.held:
            return True
        try:
            self._lock.acquire(timeout=0)  # non-blocking: one flock(2) call
        except Timeout:
            return False
        except OSError as exc:
            if exc.errno == errno.ENOSYS:
                raise UnusableLock(NO_FLOCK.format(folder=self.path.parent)) from None
            raise
        self.held = True
        return True

    async def holder(self) -> str | None:
        """A held ``flock`` is a live process's (the kernel drops it when the process ends, however it ends), and a
        free one is this standby's within ``POLL_S``: another process holds it."""
        return "this process" if self.held else f"another process on this host ({self.path.name})"

    async def release(self) -> None:
        if self.held:
            self._lock.release()
            self.held = False


def _lock_row(table: str = "") -> str:
    """The advisory lock's row in pg_locks (of ``table``, an alias): a bigint key is its high and low 32 bits."""
    t = f"{table}." if table else ""
    return (
        f"{t}locktype = 'advisory' AND {t}granted AND {t}classid::bigint = :hi AND {t}objid::bigint = :lo "
        f"AND {t}objsubid = 1"
    )


KEY_PARTS = {"hi": LOCK_KEY >> 32, "lo": LOCK_KEY & 0xFFFFFFFF}
POOLED = (
    "DATABASE_URL reaches PostgreSQL through a pooler in transaction mode (PgBouncer's pool_mode=transaction, a "
    'cloud "transaction pooler"): the lock that keeps one bot active lives in a database session, which such a '
    "pooler shares between clients. Point DATABASE_URL at PostgreSQL itself, or at a pool in session mode"
)


class PostgresLeadership(Leadership):
    """A session-level advisory lock on a dedicated connection."""

    def __init__(self, url: str) -> None:
        self._engine = create_async_engine(
            url,
            poolclass=NullPool,
            connect_args={
                "command_timeout": CHECK_S * 2,
                "timeout": CHECK_S * 2,
                # The keepalive settings are SET once connected (a pooler refuses unknown startup parameters).
                "server_settings": {"application_name": "mlm-bot leader lock"},
                # Unnamed statements only: through a pooler the check below must get to run, not fail on a
                # prepared statement that lives on another server connection.
                "statement_cache_size": 0,
                "prepared_statement_cache_size": 0,
            },
        )
        self._connection: AsyncConnection | None = None
        self._unreachable_logged = False
        self._sessions_checked = False

    async def try_acquire(self) -> bool:
        if self.held:
            return True
        try:
            if self._connection is None:
                self._connection = await self._engine.connect()
                await self._connection.execution_options(isolation_level="AUTOCOMMIT")
                for name, value in KEEPALIVE.items():
                    await self._connection.execute(text(f"SET {name} = {value}"))
            if not self._sessions_checked:
                pooled = await self._shared_sessions(self._connection)
                self._sessions_checked = True
            else:
                pooled = False
            got = not pooled and bool(
                await self._connection.scalar(text("SELECT pg_try_advisory_lock(:key)"), {"key": LOCK_KEY})
            )
            if got and not await self._ours(self._connection):
                pooled = True  # taken, and the next statement ran in another session: give it back (best effort)
                await self._connection.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": LOCK_KEY})
        except Exception as exc:
            await self._drop()
            if not self._unreachable_logged:
                log.warning("cannot ask PostgreSQL for the active-process lock (%s); asking again", type(exc).__name__)
                self._unreachable_logged = True
            return False
        if pooled:
            await self._drop()
            raise UnusableLock(POOLED)
        self._unreachable_logged = False
        self.held = got
        return got

    async def _shared_sessions(self, connection: AsyncConnection) -> bool:
        """Whether statements of one connection may run in different server sessions (a transaction pooler): a
        second connection holds a transaction open, and the first one's backend is compared before and after. On
        PostgreSQL itself the two are always different backends and the first keeps its own."""
        before = await connection.scalar(text("SELECT pg_backend_pid()"))
        async with self._engine.connect() as other:
            await other.begin()
            theirs = await other.scalar(text("SELECT pg_backend_pid()"))
            after = await connection.scalar(text("SELECT pg_backend_pid()"))
            await other.rollback()
        return theirs == before or after != before

    @staticmethod
    async def _ours(connection: AsyncConnection) -> bool:
        """The lock is held by this connection's own session (what pg_locks says, not that the session answers)."""
        query = text(f"SELECT count(*) FROM pg_locks WHERE {_lock_row()} AND pid = pg_backend_pid()")
        return bool(await connection.scalar(query, KEY_PARTS))

    async def _confirm(self) -> bool:
        """The lock is still ours: pg_locks shows it held by this session (a session that answers ``SELECT 1``
        may no longer hold it: unlocked by hand, or a pooler's other session)."""
        if self._connection is None:
            return False
        try:
            return await asyncio.wait_for(self._ours(self._connection), CHECK_S * 2)
        except Exception:
            await self._drop()
            return False

    async def confirm(self) -> bool:
        if not self.held:
            return False
        if await self._confirm():
            return True
        self.held = False
        return await self.try_acquire()

    async def holder(self) -> str | None:
        if self.held:
            return "this process"
        query = text(
            "SELECT a.pid, a.application_name, host(a.client_addr) FROM pg_locks l "
            f"JOIN pg_stat_activity a ON a.pid = l.pid WHERE {_lock_row('l')}"
        )
        async with self._engine.connect() as connection:
            row = (await asyncio.wait_for(connection.execute(query, KEY_PARTS), CHECK_S * 2)).first()
        if row is None:
            return None
        pid, name, host = row
        return f"PostgreSQL session {pid} ({name or 'no name'}, from {host or 'a local socket'})"

    async def watch(self) -> None:
        confirmed = time.monotonic()
        while True:
            await asyncio.sleep(CHECK_S)
            if await self._confirm():
                confirmed = time.monotonic()
                continue
            # The session is gone, and the lock with it (or the session no longer holds it): ask again (the server
            # may have restarted: free for whoever asks first). Another process holding it now, or no answer for
            # too long: lost.
            self.held = False
            log.warning("the active-process lock could not be confirmed; asking for the lock again")
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
