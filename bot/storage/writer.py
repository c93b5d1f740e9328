"""The interaction log's background writer: replies never wait for the database, and nothing is lost.

Handlers hand entries to ``log()``, which only puts them in a bounded buffer. One task writes them in
batches (one transaction per batch). A locked or unreachable database is retried with backoff, as long as it
takes; a full buffer is reported loudly and then makes callers wait for room (after their reply has gone out)
instead of dropping anything. ``close()`` writes out what is left before the bot exits.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from sqlalchemy.exc import DBAPIError, OperationalError

from bot.storage.repository import InteractionEntry, Interactions

log = logging.getLogger(__name__)

RETRYABLE = (OperationalError, DBAPIError, OSError, ConnectionError, asyncio.TimeoutError)


class InteractionWriter:
    def __init__(
        self,
        interactions: Interactions,
        *,
        max_buffer: int = 10_000,
        batch_size: int = 500,
        retry_delay: float = 0.2,
        max_retry_delay: float = 5.0,
    ) -> None:
        self._interactions = interactions
        self._queue: asyncio.Queue[InteractionEntry] = asyncio.Queue(maxsize=max_buffer)
        self.max_buffer = max_buffer
        self.batch_size = batch_size
        self.retry_delay = retry_delay
        self.max_retry_delay = max_retry_delay
        self.written = 0
        self.retries = 0
        self._task: asyncio.Task | None = None

    async def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="interaction-writer")

    @property
    def pending(self) -> int:
        return self._queue.qsize()

    async def log(self, entry: InteractionEntry) -> None:
        if self._task is None or self._task.done():
            log.error("interaction writer is not running: writing one %s entry directly", entry.kind)
            await self._write([entry])
            return
        try:
            self._queue.put_nowait(entry)
        except asyncio.QueueFull:
            log.error(
                "interaction log buffer is full (%d entries): the database is not keeping up; "
                "waiting for room instead of dropping entries",
                self.max_buffer,
            )
            await self._queue.put(entry)

    async def flush(self) -> None:
        """Wait until everything logged so far is in the database."""
        await self._queue.join()

    async def close(self, timeout: float = 30.0) -> None:
        """Write out what is buffered (retrying up to ``timeout``), then stop."""
        if self._task is None:
            return
        try:
            await asyncio.wait_for(self._queue.join(), timeout)
        except asyncio.TimeoutError:
            log.error("shutting down with %d interactions that could not be written in %.0f s", self.pending, timeout)
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._task = None

    async def _run(self) -> None:
        while True:
            batch = [await self._queue.get()]
            while len(batch) < self.batch_size and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            try:
                await self._write(batch)
            finally:
                for _ in batch:
                    self._queue.task_done()

    async def _write(self, batch: list[InteractionEntry]) -> None:
        delay = self.retry_delay
        while True:
            try:
                await self._interactions.log_many(batch)
                self.written += len(batch)
                return
            except RETRYABLE as exc:
                self.retries += 1
                log.warning("writing %d interactions failed (%s); retrying in %.1f s", len(batch), _short(exc), delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.max_retry_delay)
            except Exception:
                if len(batch) == 1:
                    log.exception("dropping an interaction the database refuses: %r", batch[0])
                    return
                for entry in batch:  # find the one bad entry; write the others
                    await self._write([entry])
                return


def _short(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}" if str(exc) else type(exc).__name__
