"""The background writer: replies never wait for the database, and nothing it can write is lost.

Handlers hand over writes (interactions, "this user pressed Start", "Telegram refused a DM", a comment claim
made while the database was away, /forget) with ``put()``, which only adds them to a bounded buffer. One task
writes them in order, in batches (one transaction per batch):

* a **transient** failure (SQLite locked or busy, the server unreachable, a dropped connection) is retried with
  backoff for as long as it takes: the writes are not lost;
* a write the database **refuses** (a constraint, a value it cannot store) is isolated by splitting the batch,
  kept as a dead letter (``bot.storage.dead_letters``: a table, the write as JSON), logged at ERROR and counted;
  the writes around it go through. Before, every error was retried forever: one bad row stopped the log, the buffer
  filled, and every handler then waited for room, which froze the bot;
* ``/forget`` is final: the writes of that user made before it (still buffered, or logged by a handler that
  was already running) are dropped, and the deletion (their dead letters with the rest) is written alone, in
  order. ``forget()`` says what happened: done, still waiting for the database, or refused.

A full buffer is reported loudly and makes callers wait for room (after their reply has gone out).
``flush()`` waits, with a timeout, for what was handed over before it was called; ``close()`` writes out what
is left before the bot exits.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import enum
import logging
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime, timedelta, timezone

from cachetools import TTLCache
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as SQLAlchemyTimeoutError
from tenacity import AsyncRetrying, retry_if_exception, wait_exponential

from bot.storage.dead_letters import DeadLetters
from bot.storage.writes import Forget, Write, write_user_id

__all__ = ["Forgotten", "InteractionWriter", "is_transient"]

log = logging.getLogger(__name__)

FORGOTTEN_KEPT = timedelta(hours=1)  # how long writes of a forgotten user that started before /forget are dropped
FORGOTTEN_KEEP = 100_000  # people forgotten within that hour, remembered at once


class Forgotten(enum.Enum):
    DONE = "done"  # deleted, committed
    PENDING = "pending"  # not yet: the database is busy or away (retried until it answers)
    FAILED = "failed"  # the database refused the deletion: nothing was deleted, the person may try again


# PostgreSQL's SQLSTATE classes that say "not now" rather than "not this": 08 connection exceptions, 40
# transaction rollback (deadlock, serialization failure), 53 insufficient resources (too many connections, disk
# full), 57 operator intervention (starting up, shutting down, a statement or command timeout); and 25006, a
# read-only transaction (a replica during a failover).
TRANSIENT_SQLSTATE_CLASSES = ("08", "40", "53", "57")
TRANSIENT_SQLSTATES = frozenset({"25006"})


def sqlstate(exc: BaseException) -> str | None:
    """PostgreSQL's SQLSTATE of a database error (asyncpg's, through SQLAlchemy's wrapper), if it has one."""
    for candidate in (getattr(exc, "orig", None), exc):
        code = getattr(candidate, "sqlstate", None)
        if isinstance(code, str) and len(code) == 5:
            return code
    return None


def is_transient(exc: BaseException) -> bool:
    """Worth retrying: the database is busy or away, not refusing this data. PostgreSQL's errors go by their
    SQLSTATE (above); otherwise OperationalError covers SQLite's "database is locked" and lost server
    connections, and a pool or command timeout is transient too; IntegrityError, DataError, ProgrammingError and
    values the driver cannot convert (StatementError) are the data's fault and never pass on a retry."""
    if isinstance(exc, (OSError, ConnectionError, asyncio.TimeoutError, TimeoutError, SQLAlchemyTimeoutError)):
        return True
    if isinstance(exc, DBAPIError):
        code = sqlstate(exc)
        if code is not None:
            return code[:2] in TRANSIENT_SQLSTATE_CLASSES or code in TRANSIENT_SQLSTATES
        return exc.connection_invalidated or isinstance(exc, (OperationalError, InterfaceError))
    return False


WriteFn = Callable[[Sequence[Write]], Awaitable[None]]


class InteractionWriter:
    def __init__(
        self,
        write: WriteFn,
        *,
        letters: DeadLetters | None = None,
        max_buffer: int = 10_000,
        batch_size: int = 500,
        retry_delay: float = 0.2,
        max_retry_delay: float = 5.0,
    ) -> None:
        self._write_all = write
        self.letters = letters
        self._queue: asyncio.Queue[tuple[int, Write]] = asyncio.Queue(maxsize=max_buffer)
        self.max_buffer = max_buffer
        self.batch_size = batch_size
        self.retry_delay = retry_delay
        self.max_retry_delay = max_retry_delay
        self.written = 0
        self.retries = 0
        self.dead_letters = 0
        self.dropped_forgotten = 0
        self._handed_over = 0  # sequence number of the last write handed over
        self._done = 0  # every write up to this number is written, dead-lettered or dropped
        self._progress = asyncio.Condition()
        self._forgotten: TTLCache[int, datetime] = TTLCache(FORGOTTEN_KEEP, ttl=FORGOTTEN_KEPT.total_seconds())
        self._forget_outcomes: dict[int, asyncio.Future[bool]] = {}  # by write number: committed, or refused
        self._held: tuple[int, Write] | None = None  # a /forget taken from the queue, for the next batch
        self._task: asyncio.Task | None = None

    async def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="interaction-writer")

    @property
    def pending(self) -> int:
        return self._handed_over - self._done

    async def log(self, op: Write) -> None:
        """Hand a write over (interactions and the other bookkeeping alike); returns at once unless the buffer
        is full."""
        await self.put(op)

    async def put(self, op: Write) -> int:
        if self._task is None or self._task.done():
            raise RuntimeError("the interaction writer is not running")
        self._handed_over += 1
        item = (self._handed_over, op)
        try:
            self._queue.put_nowait(item)
        except asyncio.QueueFull:
            log.error(
                "interaction log buffer is full (%d entries): the database is not keeping up; "
                "waiting for room instead of dropping entries",
                self.max_buffer,
            )
            await self._queue.put(item)
        return item[0]

    async def flush(self, timeout: float = 30.0) -> bool:
        """Wait until everything handed over before this call is written (or dead-lettered); writes handed
        over meanwhile are not waited for. False if that took longer than ``timeout``."""
        return await self._wait_for(self._handed_over, timeout)

    async def forget(self, user_id: int, timeout: float = 30.0) -> Forgotten:
        """Delete everything about the user, for good: their writes that started before now are dropped, even
        those a running handler hands over later, and the deletion is written in order, then their dead letters
        are removed. DONE once committed; PENDING if that takes longer than ``timeout`` (it is still written, as
        soon as it can be); FAILED if the database refused it (nothing was deleted)."""
        now = self.note_forgotten(user_id)
        outcome: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        number = self._handed_over + 1  # the number put() gives it (no await in between)
        self._forget_outcomes[number] = outcome
        try:
            await self.put(Forget(user_id, now))
        except BaseException:
            self._forget_outcomes.pop(number, None)
            raise
        try:
            committed = await asyncio.wait_for(asyncio.shield(outcome), timeout)
        except asyncio.TimeoutError:
            return Forgotten.PENDING
        return Forgotten.DONE if committed else Forgotten.FAILED

    def note_forgotten(self, user_id: int) -> datetime:
        """From now on (for FORGOTTEN_KEPT), writes of ``user_id`` that started before now are dropped."""
        now = datetime.now(timezone.utc)
        self._forgotten[user_id] = now
        return now

    async def _wait_for(self, number: int, timeout: float) -> bool:
        async def reached() -> None:
            async with self._progress:
                await self._progress.wait_for(lambda: self._done >= number)

        try:
            await asyncio.wait_for(reached(), timeout)
        except asyncio.TimeoutError:
            return False
        return True

    async def close(self, timeout: float = 30.0) -> None:
        """Write out what is buffered (retrying up to ``timeout``), then stop."""
        if self._task is None:
            return
        if not await self.flush(timeout):
            log.error("shutting down with %d writes that could not be made in %.0f s", self.pending, timeout)
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._task = None

    # ------------------------------------------------------------------ the task
    async def _run(self) -> None:
        while True:
            if self._held is not None:
                batch, self._held = [self._held], None
            else:
                batch = [await self._queue.get()]
            # A /forget is written alone: the deletion must not share a transaction with writes after it.
            while len(batch) < self.batch_size and not self._queue.empty() and not isinstance(batch[0][1], Forget):
                item = self._queue.get_nowait()
                if isinstance(item[1], Forget):
                    self._held = item
                    break
                batch.append(item)
            refused: list[Write] = []
            try:
                refused = await self._write([op for _, op in batch if not self._is_forgotten(op)])
            finally:
                outcome = self._forget_outcomes.pop(batch[0][0], None)
                if outcome is not None and not outcome.done():
                    outcome.set_result(not refused)
                for _ in batch:
                    self._queue.task_done()
                async with self._progress:
                    self._done = batch[-1][0]
                    self._progress.notify_all()

    def _is_forgotten(self, op: Write) -> bool:
        if isinstance(op, Forget):
            return False
        user_id = write_user_id(op)
        forgotten_at = self._forgotten.get(user_id) if user_id is not None else None
        if forgotten_at is None:  # never, or more than FORGOTTEN_KEPT ago (the cache's expiry)
            return False
        started = getattr(op, "created_at", None) or datetime.now(timezone.utc)
        if started.tzinfo is None:
            started = started.replace(tzinfo=timezone.utc)
        if started <= forgotten_at:
            self.dropped_forgotten += 1
            return True
        return False

    async def _write(self, ops: list[Write]) -> list[Write]:
        """Write ``ops``; transient failures are retried until they pass, refused writes are dead-lettered (and
        returned)."""
        if not ops:
            return []
        try:
            await self._retrying(ops)
        except Exception as exc:  # refused: find the write(s) at fault by halves, write the rest
            if len(ops) == 1:
                await self._dead_letter(ops[0], exc)
                return [ops[0]]
            middle = len(ops) // 2
            return [*await self._write(ops[:middle]), *await self._write(ops[middle:])]
        self.written += sum(1 for op in ops if not isinstance(op, Forget))
        return []

    async def _retrying(self, ops: list[Write]) -> None:
        def before_sleep(state) -> None:
            self.retries += 1
            log.warning(
                "writing %d entries failed (%s); retrying in %.2f s",
                len(ops),
                _short(state.outcome.exception()),
                state.next_action.sleep,
            )

        retrying = AsyncRetrying(
            retry=retry_if_exception(is_transient),
            wait=wait_exponential(multiplier=self.retry_delay, min=self.retry_delay, max=self.max_retry_delay),
            before_sleep=before_sleep,
            reraise=True,
        )
        async for attempt in retrying:
            with attempt:
                await self._write_all(ops)

    async def _dead_letter(self, op: Write, exc: BaseException) -> None:
        self.dead_letters += 1
        log.error("the database refused a %s write (%s); kept as a dead letter", type(op).__name__, _short(exc))
        if self.letters is None:
            return
        record = {
            "failed_at": datetime.now(timezone.utc).isoformat(),
            "error": _short(exc),
            "type": type(op).__name__,
            "user_id": write_user_id(op),  # whose it is: /forget removes it
            "write": dataclasses.asdict(op),
        }
        try:
            await self.letters.add(record)
        except Exception as exc2:  # the letter refused too (or the database away): said, never retried for ever
            log.error(
                "could not keep the refused %s write as a dead letter either (%s)", type(op).__name__, _short(exc2)
            )


def _short(exc: BaseException | None) -> str:
    if exc is None:
        return "unknown"
    return f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}" if str(exc) else type(exc).__name__
