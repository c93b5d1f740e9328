"""The background writer: replies never wait for the database, and nothing it can write is lost.

Handlers hand over writes (interactions, "this user pressed Start", "Telegram refused a DM", a comment claim
made while the database was away, /forget) with ``put()``, which only adds them to a bounded buffer. One task
writes them in order, in batches (one transaction per batch):

* a **transient** failure (SQLite locked or busy, the server unreachable, a dropped connection) is retried with
  backoff for as long as it takes: the writes are not lost;
* a write the database **refuses** (a constraint, a value it cannot store) is isolated by splitting the batch,
  appended to a dead-letter file beside the database (JSON lines), logged at ERROR and counted; the writes
  around it go through. Before, every error was retried forever: one bad row stopped the log, the buffer
  filled, and every handler then waited for room, which froze the bot;
* ``/forget`` is final: the writes of that user made before it (still buffered, or logged by a handler that
  was already running) are dropped, and the deletion is written alone, in order.

A full buffer is reported loudly and makes callers wait for room (after their reply has gone out).
``flush()`` waits, with a timeout, for what was handed over before it was called; ``close()`` writes out what
is left before the bot exits.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime, timedelta, timezone
from pathlib import Path

from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from tenacity import AsyncRetrying, retry_if_exception, wait_exponential

from bot.storage.repository import Forget, Write, write_user_id

log = logging.getLogger(__name__)

FORGOTTEN_KEPT = timedelta(hours=1)  # how long writes of a forgotten user that started before /forget are dropped


def is_transient(exc: BaseException) -> bool:
    """Worth retrying: the database is busy or away, not refusing this data. OperationalError covers SQLite's
    "database is locked" and lost server connections; IntegrityError, DataError, ProgrammingError and
    values the driver cannot convert (StatementError) are the data's fault and never pass on a retry."""
    if isinstance(exc, (OSError, ConnectionError, asyncio.TimeoutError, TimeoutError)):
        return True
    if isinstance(exc, DBAPIError):
        return exc.connection_invalidated or isinstance(exc, (OperationalError, InterfaceError))
    return False


WriteFn = Callable[[Sequence[Write]], Awaitable[None]]


class InteractionWriter:
    def __init__(
        self,
        write: WriteFn,
        *,
        dead_letter_path: Path | str | None = None,
        max_buffer: int = 10_000,
        batch_size: int = 500,
        retry_delay: float = 0.2,
        max_retry_delay: float = 5.0,
    ) -> None:
        self._write_all = write
        self.dead_letter_path = Path(dead_letter_path) if dead_letter_path else None
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
        self._forgotten: dict[int, datetime] = {}
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

    async def forget(self, user_id: int, timeout: float = 30.0) -> bool:
        """Delete everything about the user, for good: their writes that started before now are dropped, even
        those a running handler hands over later, and the deletion is written in order. True once it is in
        the database; False if that takes longer than ``timeout`` (it is still written, as soon as it can be)."""
        now = datetime.now(timezone.utc)
        self._forgotten[user_id] = now
        number = await self.put(Forget(user_id, now))
        return await self._wait_for(number, timeout)

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
            try:
                await self._write([op for _, op in batch if not self._is_forgotten(op)])
            finally:
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
        if forgotten_at is None:
            return False
        if datetime.now(timezone.utc) - forgotten_at > FORGOTTEN_KEPT:
            del self._forgotten[user_id]  # type: ignore[arg-type]
            return False
        started = getattr(op, "created_at", None) or datetime.now(timezone.utc)
        if started.tzinfo is None:
            started = started.replace(tzinfo=timezone.utc)
        if started <= forgotten_at:
            self.dropped_forgotten += 1
            return True
        return False

    async def _write(self, ops: list[Write]) -> None:
        """Write ``ops``; transient failures are retried until they pass, refused writes are dead-lettered."""
        if not ops:
            return
        try:
            await self._retrying(ops)
        except Exception as exc:  # refused: find the write(s) at fault by halves, write the rest
            if len(ops) == 1:
                await self._dead_letter(ops[0], exc)
                return
            middle = len(ops) // 2
            await self._write(ops[:middle])
            await self._write(ops[middle:])
            return
        self.written += sum(1 for op in ops if not isinstance(op, Forget))

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
        where = str(self.dead_letter_path) if self.dead_letter_path else "nowhere (no dead-letter file)"
        log.error("the database refused a %s write (%s); kept in %s", type(op).__name__, _short(exc), where)
        if self.dead_letter_path is None:
            return
        record = {
            "failed_at": datetime.now(timezone.utc).isoformat(),
            "error": _short(exc),
            "type": type(op).__name__,
            "write": dataclasses.asdict(op),
        }
        line = json.dumps(record, default=str, ensure_ascii=False) + "\n"
        try:
            await asyncio.to_thread(_append, self.dead_letter_path, line)
        except OSError:
            log.exception("could not append to the dead-letter file %s", self.dead_letter_path)


def _append(path: Path, line: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as out:
        out.write(line)


def dead_letter_path_for(database_url: str) -> Path:
    """Beside the SQLite file (``log.sqlite3.dead-letter.jsonl``), else ``data/dead-letter.jsonl``."""
    from sqlalchemy.engine import make_url

    parsed = make_url(database_url)
    if parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:"):
        return Path(parsed.database).resolve().with_name(Path(parsed.database).name + ".dead-letter.jsonl")
    return Path("data", "dead-letter.jsonl").resolve()


def _short(exc: BaseException | None) -> str:
    if exc is None:
        return "unknown"
    return f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}" if str(exc) else type(exc).__name__
