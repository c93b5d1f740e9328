"""The micro-batcher: many concurrent callers, one model thread.

A request passes three stages, each its own place so none waits on another's kind of work:

1. **prepare** (CPU pool): a single task drains whatever requests are waiting and tokenizes them with one
   batch call, so tokenization is batched too and never runs on the model thread;
2. **forward** (the model thread): the dispatcher sends a batch the moment the model is idle; while it is busy,
   new work piles up and goes out together next time. Batches are cut from the waiting jobs around the oldest
   one, taking the jobs of the nearest lengths (length bucketing), bounded by a batch size and a token budget
   (batch size x longest input). CUDA out-of-memory splits the batch in halves and retries;
3. **postprocess** (CPU pool): one decode call per batch, while the model thread already runs the next one.

The number of requests inside is bounded: past ``max_queue`` a caller gets ``BusyError`` at once instead of
an unbounded wait; each request has a deadline; ``close()`` refuses new work and drains what is inside.

With a fast GPU the event loop is the bottleneck, so the request path is cut to the bone: one future per
``fill``, handed from stage to stage (the caller wakes once, with its result); stage inboxes that are plain lists
(``_Inbox``); one task that watches every deadline, oldest first, instead of a timer per request. On a tiny
model with the forward stubbed out (what a very fast GPU looks like from the CPU side) that took the event
loop's CPU time per sentence from about 32 to 13 microseconds (``benchmarks/cpu_side.py``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Generic, Protocol, TypeVar

import torch

from models.engine.core import FillMaskEngine, JointFillState
from models.engine.errors import (
    BusyError,
    FillMaskError,
    ModelOverloadedError,
    RequestTimeoutError,
    ShuttingDownError,
)
from models.engine.memory import return_freed_memory
from models.engine.results import EncodedInput, FillMaskRequest, FillMaskResult, JointFill, MaskScores

log = logging.getLogger(__name__)

MAX_PADDING_FRACTION = 0.5
# Padded tokens of work after which the batcher, once idle, trims the heap (``_trim_when_idle``).
TRIM_AFTER_TOKENS = 1_024

T = TypeVar("T")


class BatchObserver(Protocol):
    """What the batcher reports (the worker turns it into Prometheus metrics)."""

    def batch_done(self, size: int, padded_tokens: int, seconds: float) -> None: ...

    def oom_split(self, size: int) -> None: ...


@dataclass(eq=False)
class _Job:
    encoded: EncodedInput
    future: asyncio.Future
    wants_result: bool  # decoded FillMaskResult, or the raw MaskScores (joint fill)
    background: bool = False  # taken only when no foreground job waits (``_next_batch``)
    enqueued: float = field(default_factory=time.monotonic)


@dataclass(eq=False)
class _Prep:
    request: FillMaskRequest
    future: asyncio.Future
    then_forward: bool = False  # go on to the model with the same future (``fill``), or answer the encoding


class MicroBatcher:
    def __init__(
        self,
        engine: FillMaskEngine,
        *,
        max_batch_size: int = 32,
        max_batch_tokens: int = 16_384,
        max_queue: int = 512,
        request_timeout: float = 30.0,
        cpu_threads: int = 2,
        observer: BatchObserver | None = None,
        background_batch_size: int = 8,
    ) -> None:
        if max_batch_size < 1 or max_batch_tokens < 1 or max_queue < 1:
            raise ValueError("batch size, token budget and queue size must be positive")
        self.engine = engine
        self.max_batch_size = max_batch_size
        self.max_batch_tokens = max_batch_tokens
        self.max_queue = max_queue
        self.request_timeout = request_timeout
        self.observer = observer
        self.background_batch_size = max(1, background_batch_size)
        # Model seconds per input, a moving average over recent batches (what ``backlog_seconds`` counts in).
        self.seconds_per_input = 0.01
        self._cpu = ThreadPoolExecutor(max_workers=cpu_threads, thread_name_prefix="mlm-cpu")
        self._prep_inbox: _Inbox[_Prep] = _Inbox()
        self._model_inbox: _Inbox[_Job] = _Inbox()
        self._pending: list[_Job] = []
        # The deadlines of ``fill`` requests, oldest first (one timeout for all, so admission order is deadline
        # order): one task watches the oldest, instead of a timer per request (see ``_deadline_loop``).
        self._deadlines: OrderedDict[asyncio.Future, float] = OrderedDict()
        self._deadline_added = asyncio.Event()
        self._tasks: list[asyncio.Task] = []
        self._in_flight = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self._closing = False
        # Padded tokens run since the heap was last trimmed (``_trim_when_idle``).
        self._tokens_since_trim = 0

    # ------------------------------------------------------------------ public
    async def start(self) -> None:
        if not self._tasks:
            self._tasks = [
                asyncio.create_task(self._prepare_loop(), name="mlm-prepare"),
                asyncio.create_task(self._dispatch_loop(), name="mlm-dispatch"),
                asyncio.create_task(self._deadline_loop(), name="mlm-deadlines"),
            ]

    @property
    def in_flight(self) -> int:
        """Requests admitted and not yet answered."""
        return self._in_flight

    @property
    def queue_depth(self) -> int:
        """Jobs waiting for the model (not counting the batch it is running)."""
        return len(self._model_inbox) + len(self._pending) + len(self._prep_inbox)

    async def fill(self, request: FillMaskRequest) -> FillMaskResult:
        # The hot path, cut to what the event loop must do per request: one future, which the prepare stage
        # hands on to the model stage itself (the caller wakes once, with the result), and no timer of its own
        # (the deadline loop fails the future if its time runs out). With a fast GPU, the event loop is what
        # limits throughput.
        self._admit(1)
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self._deadlines[future] = loop.time() + self.request_timeout
        if len(self._deadlines) == 1:
            self._deadline_added.set()
        try:
            self._prep_inbox.put(_Prep(request, future, then_forward=True))
            return await future
        finally:
            self._deadlines.pop(future, None)
            self._release(1)

    async def fill_many(self, requests: Sequence[FillMaskRequest]) -> list[FillMaskResult]:
        """Several requests admitted together (all or none); the first error among them is raised. Every request
        runs to its end even when a neighbour fails, so no work is left behind unawaited."""
        self._admit(len(requests))
        try:
            deadline = self._deadline()
            prepared = asyncio.gather(*(self._submit_prepare(r) for r in requests), return_exceptions=True)
            encoded = _first_error_or(await self._until(prepared, deadline))
            forwarded = asyncio.gather(
                *(self._submit_forward(e, wants_result=True) for e in encoded), return_exceptions=True
            )
            return _first_error_or(await self._until(forwarded, deadline))
        finally:
            self._release(len(requests))

    async def fill_joint(self, request: FillMaskRequest) -> JointFill:
        self._admit(1)
        try:
            return await self._with_deadline(self._fill_joint(request))
        finally:
            self._release(1)

    async def close(self, timeout: float = 30.0) -> None:
        """Refuse new requests, let the admitted ones finish (up to ``timeout``), then stop the threads."""
        self._closing = True
        try:
            await asyncio.wait_for(self._idle.wait(), timeout)
        except asyncio.TimeoutError:
            log.warning("batcher closed with %d requests still in flight", self._in_flight)
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        self._cpu.shutdown(wait=False, cancel_futures=True)
        # Whoever is still waiting hears it now: with the stage loops and the deadline task gone, nothing else
        # would ever answer them.
        gone = ShuttingDownError("The model worker is shutting down. Try again in a moment.")
        waiting = [*self._deadlines, *(item.future for item in self._prep_inbox.take_nowait())]
        waiting += [job.future for job in [*self._model_inbox.take_nowait(), *self._pending]]
        self._deadlines.clear()
        self._pending = []
        for future in waiting:
            _settle(future, gone)

    # ----------------------------------------------------------- request path
    def _admit(self, count: int) -> None:
        if self._closing:
            raise ShuttingDownError("The model worker is shutting down. Try again in a moment.")
        if self._in_flight + count > self.max_queue:
            raise BusyError("The model is busy with other requests right now. Try again in a few seconds.")
        self._in_flight += count
        self._idle.clear()

    def _release(self, count: int) -> None:
        self._in_flight -= count
        if self._in_flight == 0:
            self._idle.set()

    def _deadline(self) -> float:
        return asyncio.get_running_loop().time() + self.request_timeout

    def _timeout_error(self) -> RequestTimeoutError:
        return RequestTimeoutError(
            f"The model did not answer within {self.request_timeout:g} seconds. Try again in a moment."
        )

    async def _until(self, future: asyncio.Future, deadline: float):
        """Await a future (not a coroutine: ``wait_for`` wraps no task around it) until the deadline; past it,
        the future is cancelled, so the stage loops drop its work."""
        remaining = deadline - asyncio.get_running_loop().time()
        try:
            return await asyncio.wait_for(future, max(remaining, 0.0))
        except asyncio.TimeoutError:
            raise self._timeout_error() from None

    async def _with_deadline(self, coro):
        try:
            return await asyncio.wait_for(coro, self.request_timeout)
        except asyncio.TimeoutError:
            raise self._timeout_error() from None

    async def _fill_joint(self, request: FillMaskRequest) -> JointFill:
        state = JointFillState(self.engine, await self._submit_prepare(request))
        while not state.done:
            state.advance(await self._submit_forward(state.current, wants_result=False))
        return await asyncio.get_running_loop().run_in_executor(self._cpu, state.result)

    def _submit_prepare(self, request: FillMaskRequest) -> asyncio.Future:
        future = asyncio.get_running_loop().create_future()
        self._prep_inbox.put(_Prep(request, future))
        return future

    def _submit_forward(self, encoded: EncodedInput, *, wants_result: bool) -> asyncio.Future:
        future = asyncio.get_running_loop().create_future()
        self._model_inbox.put(_Job(encoded, future, wants_result))
        return future

    # ------------------------------------------------------------ stage loops
    async def _prepare_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            items = _live(await self._prep_inbox.take())
            if not items:
                continue
            try:
                prepared = await loop.run_in_executor(self._cpu, self.engine.prepare_batch, [p.request for p in items])
            except Exception as exc:  # a bug, not the user's input: fail these callers, keep serving
                log.exception("tokenization failed for a batch of %d", len(items))
                prepared = [exc] * len(items)
            jobs = []
            for item, result in zip(items, prepared, strict=False):
                if item.then_forward and not isinstance(result, BaseException) and not item.future.done():
                    jobs.append(_Job(result, item.future, wants_result=True, background=item.request.background))
                else:
                    _settle(item.future, result)
            self._model_inbox.put_many(jobs)

    async def _deadline_loop(self) -> None:
        """Fail each ``fill`` whose deadline has passed, wherever its work is (the stage loops drop work whose
        future is done). It sleeps until the oldest request's deadline: one wake-up per timeout period when
        requests finish in time, where a timer per request cost the event loop a heap push and a cancel each."""
        loop = asyncio.get_running_loop()
        while True:
            if not self._deadlines:
                self._deadline_added.clear()
                await self._deadline_added.wait()
                continue
            future, deadline = next(iter(self._deadlines.items()))
            delay = deadline - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
                continue
            del self._deadlines[future]
            if not future.done():
                future.set_exception(self._timeout_error())

    async def _dispatch_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if not self._pending:
                self._pending.extend(await self._model_inbox.take())
            else:
                self._pending.extend(self._model_inbox.take_nowait())
            self._pending = _live(self._pending)
            if not self._pending:
                continue
            batch = self._next_batch()
            started = time.perf_counter()
            try:
                outputs = await loop.run_in_executor(
                    self.engine.model_thread, self._run_model, [job.encoded for job in batch]
                )
            except Exception as exc:
                log.exception("model forward failed for a batch of %d", len(batch))
                outputs = [exc] * len(batch)
            took = time.perf_counter() - started
            self.seconds_per_input += 0.2 * (took / len(batch) - self.seconds_per_input)
            if self.observer is not None:
                padded = len(batch) * max(len(job.encoded) for job in batch)
                self.observer.batch_done(len(batch), padded, took)
            self._deliver(batch, outputs)
            self._trim_when_idle(len(batch) * max(len(job.encoded) for job in batch))

    def _trim_when_idle(self, padded_tokens: int) -> None:
        """On CPU, when the queue has run dry after real work, hand the batches' freed working memory back to the
        system. glibc keeps it otherwise: bert-base int8 went from 580 to 950 MB RSS over 30 batches of up to 40
        sentences, and stayed there; trimmed, 620 MB, for about 6 ms on the model thread once the answers are
        out (a fixed mmap threshold instead made each batch twice as slow)."""
        self._tokens_since_trim += padded_tokens
        if self._tokens_since_trim < TRIM_AFTER_TOKENS or self._pending or len(self._model_inbox):
            return
        device = getattr(self.engine, "device", None)
        if device is None or device.type != "cpu":
            return
        self._tokens_since_trim = 0
        asyncio.get_running_loop().run_in_executor(self.engine.model_thread, return_freed_memory)

    def _next_batch(self) -> list[_Job]:
        """The next batch: foreground jobs (chat) whenever any waits, background ones (the playground) only when
        none does, and then at most ``background_batch_size`` of them, so a chat request that comes in meanwhile
        waits for a small batch at most."""
        foreground = [j for j in self._pending if not j.background]
        pending = foreground or self._pending
        size = self.max_batch_size if foreground else min(self.max_batch_size, self.background_batch_size)
        chosen = plan_batch([len(j.encoded) for j in pending], size, self.max_batch_tokens)
        batch = [pending[i] for i in chosen]
        taken = {id(j) for j in batch}
        self._pending = [j for j in self._pending if id(j) not in taken]
        return batch

    def backlog_seconds(self, *, background: bool = True) -> float:
        """About how long the model needs for what waits (only background jobs, or all), at the pace of the
        recent batches."""
        jobs = [*self._pending, *self._model_inbox.peek()]
        prepping = [p for p in self._prep_inbox.peek() if p.then_forward]
        count = sum(1 for j in jobs if j.background or not background)
        count += sum(1 for p in prepping if p.request.background or not background)
        return count * self.seconds_per_input

    def _run_model(self, batch: list[EncodedInput]) -> list[MaskScores | FillMaskError]:
        """On the model thread. Out of memory: split in halves and retry; a single input that still does not
        fit gets its own error, the rest of the batch is answered."""
        try:
            return list(self.engine.forward(batch))
        except Exception as exc:
            if not _is_out_of_memory(exc):
                raise
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            if self.observer is not None:
                self.observer.oom_split(len(batch))
            if len(batch) == 1:
                log.error("out of memory on a single input of %d tokens", len(batch[0]))
                return [
                    ModelOverloadedError("That text is too big for the model's memory right now. Try a shorter one.")
                ]
            log.warning("out of memory on a batch of %d: splitting", len(batch))
            middle = len(batch) // 2
            return self._run_model(batch[:middle]) + self._run_model(batch[middle:])

    def _deliver(self, batch: list[_Job], outputs: Sequence[MaskScores | BaseException]) -> None:
        decode: list[tuple[_Job, MaskScores]] = []
        for job, output in zip(batch, outputs, strict=False):
            if isinstance(output, BaseException) or not job.wants_result:
                _settle(job.future, output)
            else:
                decode.append((job, output))
        if decode:
            asyncio.get_running_loop().create_task(self._postprocess(decode))

    async def _postprocess(self, decode: list[tuple[_Job, MaskScores]]) -> None:
        loop = asyncio.get_running_loop()
        try:
            results: Sequence[FillMaskResult | BaseException] = await loop.run_in_executor(
                self._cpu, self.engine.postprocess, [j.encoded for j, _ in decode], [s for _, s in decode]
            )
        except Exception as exc:
            log.exception("decoding failed for a batch of %d", len(decode))
            results = [exc] * len(decode)
        for (job, _), result in zip(decode, results, strict=False):
            _settle(job.future, result)


def plan_batch(
    lengths: Sequence[int], max_size: int, max_tokens: int, max_padding: float = MAX_PADDING_FRACTION
) -> list[int]:
    """Which waiting inputs (indices into ``lengths``, oldest first) go into the next batch.

    The oldest input always goes, so nothing starves. Then the inputs nearest to it in length join, while the
    batch stays within ``max_size`` inputs, ``max_tokens`` padded tokens (inputs x longest input) and at most
    ``max_padding`` of its tokens padding, so one long outlier never pads a whole batch: it waits for a
    batch of its own length (or for its turn as the oldest)."""
    order = sorted(range(len(lengths)), key=lambda i: (lengths[i], i))
    lo = order.index(0)
    hi = lo + 1  # the batch is order[lo:hi]; its longest input is order[hi - 1]
    target, real = lengths[0], lengths[0]

    def fits(size: int, longest: int, tokens: int) -> bool:
        padded = size * longest
        return padded <= max_tokens and padded - tokens <= max_padding * padded

    while hi - lo < max_size:
        size, longest = hi - lo + 1, lengths[order[hi - 1]]
        options = []
        if lo > 0 and fits(size, longest, real + lengths[order[lo - 1]]):
            options.append((target - lengths[order[lo - 1]], -1))
        if hi < len(order) and fits(size, lengths[order[hi]], real + lengths[order[hi]]):
            options.append((lengths[order[hi]] - target, +1))
        if not options:
            break
        if min(options)[1] < 0:
            lo -= 1
            real += lengths[order[lo]]
        else:
            real += lengths[order[hi]]
            hi += 1
    return order[lo:hi]


def _first_error_or(outcomes: list) -> list:
    for outcome in outcomes:
        if isinstance(outcome, BaseException):
            raise outcome
    return outcomes


class _Inbox(Generic[T]):
    """Work handed to one stage loop, which takes all of it at once. An ``asyncio.Queue`` costs a few Python
    calls per item on the way in and again on the way out; this is an append, and one swap per drain."""

    def __init__(self) -> None:
        self._items: list[T] = []
        self._ready = asyncio.Event()

    def __len__(self) -> int:
        return len(self._items)

    def put(self, item: T) -> None:
        self._items.append(item)
        self._ready.set()

    def put_many(self, items: list[T]) -> None:
        if items:
            self._items.extend(items)
            self._ready.set()

    def peek(self) -> list[T]:
        return list(self._items)

    def take_nowait(self) -> list[T]:
        items, self._items = self._items, []
        self._ready.clear()
        return items

    async def take(self) -> list[T]:
        """Wait for at least one item, then take everything there."""
        while not self._items:
            self._ready.clear()
            await self._ready.wait()
        return self.take_nowait()


def _live(items: list) -> list:
    """Drop work whose caller already gave up (timed out or cancelled)."""
    return [item for item in items if not item.future.done()]


def _settle(future: asyncio.Future, outcome: object) -> None:
    if future.done():
        return
    if isinstance(outcome, BaseException):
        future.set_exception(outcome)
    else:
        future.set_result(outcome)


def _is_out_of_memory(exc: BaseException) -> bool:
    oom_type = getattr(torch, "OutOfMemoryError", None) or getattr(torch.cuda, "OutOfMemoryError", ())
    return isinstance(exc, oom_type) or (isinstance(exc, RuntimeError) and "out of memory" in str(exc))
