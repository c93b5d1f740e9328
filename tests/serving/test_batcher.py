"""The micro-batcher with a real tiny model: batching, isolation, overload, out-of-memory, deadlines, drain."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncIterator, Sequence

import pytest
import torch

from models.bench.random_models import sentences
from models.engine.core import FillMaskEngine
from models.engine.errors import (
    BusyError,
    InvalidParameterError,
    ModelOverloadedError,
    NoMaskError,
    RequestTimeoutError,
    ShuttingDownError,
)
from models.engine.results import EncodedInput, FillMaskRequest, FillMaskResult, MaskScores
from models.serving import batcher as batcher_module
from models.serving.batcher import MicroBatcher, plan_batch


class Recorder:
    def __init__(self) -> None:
        self.batches: list[int] = []
        self.padded: list[int] = []
        self.splits: list[int] = []

    def batch_done(self, size: int, padded_tokens: int, seconds: float) -> None:
        self.batches.append(size)
        self.padded.append(padded_tokens)

    def oom_split(self, size: int) -> None:
        self.splits.append(size)


class GatedEngine:
    """The real engine, but the model thread waits at a gate before each forward (to build up a queue),
    and can be told to run out of memory above a batch size."""

    def __init__(self, engine: FillMaskEngine, *, oom_above: int | None = None, oom_tokens: set[int] | None = None):
        self._engine = engine
        self.gate = threading.Event()
        self.gate.set()
        self.oom_above = oom_above
        self.oom_tokens = oom_tokens or set()
        self.forward_sizes: list[int] = []

    def __getattr__(self, name: str):
        return getattr(self._engine, name)

    def forward(self, batch: Sequence[EncodedInput]) -> list[MaskScores]:
        self.gate.wait(10)
        self.forward_sizes.append(len(batch))
        if self.oom_above is not None and len(batch) > self.oom_above:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB (simulated)")
        if any(set(e.input_ids) & self.oom_tokens for e in batch):
            raise torch.OutOfMemoryError("CUDA out of memory (simulated, even alone)")
        return self._engine.forward(batch)


@contextlib.asynccontextmanager
async def gated_batcher(gated: GatedEngine, **options: object) -> AsyncIterator[MicroBatcher]:
    """A started batcher in front of ``gated``, whose gate starts closed; the batcher is closed at the end."""
    gated.gate.clear()
    batcher = MicroBatcher(gated, **options)  # type: ignore[arg-type]
    await batcher.start()
    try:
        yield batcher
    finally:
        await batcher.close()


def assert_same_results(got: list, want: list) -> None:
    """Same tokens and sentences; scores equal up to float noise (padding in a batch changes the last bits)."""
    assert len(got) == len(want)
    for g, w in zip(got, want, strict=False):
        for gm, wm in zip(g.masks, w.masks, strict=False):
            assert [(p.token, p.sequence) for p in gm] == [(p.token, p.sequence) for p in wm]
            assert [p.score for p in gm] == pytest.approx([p.score for p in wm], abs=1e-5)


@pytest.fixture
async def recorder() -> Recorder:
    return Recorder()


async def test_200_concurrent_callers_each_get_their_own_result(
    bert_engine: FillMaskEngine, recorder: Recorder
) -> None:
    texts = sentences(200, seed=3, masks=1)
    texts = [f"{t} {i}" for i, t in enumerate(texts)]  # 200 different sentences, different lengths too
    expected = [bert_engine.fill(t) for t in texts]
    batcher = MicroBatcher(bert_engine, max_batch_size=32, observer=recorder)
    await batcher.start()
    try:
        results = await asyncio.gather(*(batcher.fill(FillMaskRequest(t)) for t in texts))
    finally:
        await batcher.close()
    assert_same_results(results, expected)
    assert sum(recorder.batches) == 200
    assert max(recorder.batches) > 1, "concurrent callers should have been batched"
    assert max(recorder.batches) <= 32


async def test_dispatches_at_once_when_idle(bert_engine: FillMaskEngine, recorder: Recorder) -> None:
    batcher = MicroBatcher(bert_engine, observer=recorder)
    await batcher.start()
    try:
        for text in sentences(3, seed=4):
            await batcher.fill(FillMaskRequest(text))
    finally:
        await batcher.close()
    assert recorder.batches == [1, 1, 1]  # a lone request never waits for company


async def test_work_that_piles_up_while_busy_goes_out_together(bert_engine: FillMaskEngine, recorder: Recorder) -> None:
    gated = GatedEngine(bert_engine)
    async with gated_batcher(gated, max_batch_size=64, observer=recorder) as batcher:
        first = asyncio.create_task(batcher.fill(FillMaskRequest("the [MASK] sat .")))
        await asyncio.sleep(0.1)  # the first one is now inside the model
        rest = [asyncio.create_task(batcher.fill(FillMaskRequest(t))) for t in sentences(20, seed=5)]
        await asyncio.sleep(0.1)
        gated.gate.set()
        await asyncio.gather(first, *rest)
    assert recorder.batches == [1, 20]


async def test_the_heap_is_trimmed_once_the_queue_runs_dry_after_enough_work(
    bert_engine: FillMaskEngine, recorder: Recorder, monkeypatch: pytest.MonkeyPatch
) -> None:
    """glibc keeps the freed working memory of big batches (RSS stayed ~370 MB up with bert-base int8): the
    batcher trims it on the model thread, but only when nothing waits and after enough tokens of work."""
    trims: list[int] = []
    monkeypatch.setattr(batcher_module, "return_freed_memory", lambda: trims.append(len(recorder.batches)))
    monkeypatch.setattr(batcher_module, "TRIM_AFTER_TOKENS", 10)
    gated = GatedEngine(bert_engine)
    async with gated_batcher(gated, max_batch_size=8, observer=recorder) as batcher:
        first = asyncio.create_task(batcher.fill(FillMaskRequest("the [MASK] sat .")))
        await asyncio.sleep(0.1)  # inside the model
        rest = [asyncio.create_task(batcher.fill(FillMaskRequest(t))) for t in sentences(20, seed=5)]
        await asyncio.sleep(0.1)
        gated.gate.set()
        await asyncio.gather(first, *rest)
        await asyncio.sleep(0.1)
        assert recorder.batches == [1, 8, 8, 4] and trims == [4], "once, after the last batch"
        monkeypatch.setattr(batcher_module, "TRIM_AFTER_TOKENS", 10_000)
        await batcher.fill(FillMaskRequest("the [MASK] sat ."))
        await asyncio.sleep(0.1)
    assert trims == [4], "not after a little work"


async def test_bad_requests_fail_alone(bert_engine: FillMaskEngine) -> None:
    batcher = MicroBatcher(bert_engine)
    await batcher.start()
    try:
        results = await asyncio.gather(
            batcher.fill(FillMaskRequest("the [MASK] sat .")),
            batcher.fill(FillMaskRequest("no mask here")),
            batcher.fill(FillMaskRequest("the cat [MASK] .", top_k=2)),
            return_exceptions=True,
        )
    finally:
        await batcher.close()
    assert isinstance(results[1], NoMaskError)
    assert len(results[0].masks[0]) == 5 and len(results[2].masks[0]) == 2


async def test_out_of_memory_splits_the_batch_and_retries(bert_engine: FillMaskEngine, recorder: Recorder) -> None:
    gated = GatedEngine(bert_engine, oom_above=4)
    gated.gate.clear()
    texts = sentences(16, seed=6)
    batcher = MicroBatcher(gated, max_batch_size=64, observer=recorder)  # type: ignore[arg-type]
    await batcher.start()
    try:
        blocker = asyncio.create_task(batcher.fill(FillMaskRequest("the [MASK] sat .")))
        await asyncio.sleep(0.1)
        tasks = [asyncio.create_task(batcher.fill(FillMaskRequest(t))) for t in texts]
        await asyncio.sleep(0.1)
        gated.gate.set()
        await blocker
        results = await asyncio.gather(*tasks)
    finally:
        await batcher.close()
    assert_same_results(results, [bert_engine.fill(t) for t in texts])
    assert recorder.splits[:3] == [16, 8, 8]  # 16 -> 8 + 8 -> 4 + 4 + 4 + 4
    assert max(s for s in gated.forward_sizes if s <= 4) == 4


async def test_an_input_too_big_even_alone_gets_its_own_error(bert_engine: FillMaskEngine) -> None:
    poison = (
        bert_engine.tokenizer.convert_tokens_to_ids("zebra") if "zebra" in bert_engine.tokenizer.get_vocab() else None
    )
    poison = poison or bert_engine.tokenizer.convert_tokens_to_ids("tiger")
    gated = GatedEngine(bert_engine, oom_tokens={poison})
    gated.gate.clear()
    batcher = MicroBatcher(gated)  # type: ignore[arg-type]
    await batcher.start()
    try:
        blocker = asyncio.create_task(batcher.fill(FillMaskRequest("the [MASK] sat .")))
        await asyncio.sleep(0.1)
        good = [asyncio.create_task(batcher.fill(FillMaskRequest(f"the {w} [MASK] ."))) for w in ("cat", "dog", "cow")]
        bad = asyncio.create_task(batcher.fill(FillMaskRequest("the tiger [MASK] .")))
        await asyncio.sleep(0.1)
        gated.gate.set()
        await blocker
        results = await asyncio.gather(*good)
        with pytest.raises(ModelOverloadedError):
            await bad
    finally:
        await batcher.close()
    assert all(len(r.masks[0]) == 5 for r in results)


async def test_full_queue_answers_busy_at_once(bert_engine: FillMaskEngine) -> None:
    gated = GatedEngine(bert_engine)
    async with gated_batcher(gated, max_queue=4) as batcher:
        admitted = [asyncio.create_task(batcher.fill(FillMaskRequest(t))) for t in sentences(4, seed=8)]
        await asyncio.sleep(0.05)
        with pytest.raises(BusyError, match="busy"):
            await asyncio.wait_for(batcher.fill(FillMaskRequest("the [MASK] sat .")), 1)
        gated.gate.set()
        assert len(await asyncio.gather(*admitted)) == 4
        assert (await batcher.fill(FillMaskRequest("the [MASK] sat ."))).masks  # room again


async def test_deadline_answers_timeout_and_the_batcher_recovers(bert_engine: FillMaskEngine) -> None:
    gated = GatedEngine(bert_engine)
    async with gated_batcher(gated, request_timeout=0.3) as batcher:
        with pytest.raises(RequestTimeoutError, match="did not answer"):
            await batcher.fill(FillMaskRequest("the [MASK] sat ."))
        assert batcher.in_flight == 0
        gated.gate.set()
        assert (await batcher.fill(FillMaskRequest("the cat [MASK] ."))).masks


async def test_each_deadline_fires_on_time_and_a_later_request_still_gets_its_answer(
    bert_engine: FillMaskEngine,
) -> None:
    """One task watches every deadline, oldest first: the older request times out at its own deadline, never
    early, and the newer one (admitted while the loop slept on the older one's deadline) is answered."""
    gated = GatedEngine(bert_engine)
    loop = asyncio.get_running_loop()

    async def timed(text: str) -> tuple[object, float]:
        started = loop.time()
        try:
            return await batcher.fill(FillMaskRequest(text)), loop.time() - started
        except RequestTimeoutError as exc:
            return exc, loop.time() - started

    async with gated_batcher(gated, request_timeout=0.4) as batcher:
        older = asyncio.create_task(timed("the [MASK] sat ."))
        await asyncio.sleep(0.25)
        newer = asyncio.create_task(timed("the cat [MASK] ."))
        outcome, waited = await older
        assert isinstance(outcome, RequestTimeoutError) and waited >= 0.4
        assert not newer.done() and batcher.in_flight == 1
        gated.gate.set()
        answer, _ = await newer
        assert isinstance(answer, FillMaskResult) and answer.masks
        assert batcher.in_flight == 0


async def test_waiting_requests_hold_no_timer_each(bert_engine: FillMaskEngine) -> None:
    """A deadline per request is one task's business, not a timer per request on the event loop (a heap push
    and a cancel each, which showed in profiles of the hot path)."""
    gated = GatedEngine(bert_engine)
    loop = asyncio.get_running_loop()
    async with gated_batcher(gated, max_queue=1000) as batcher:
        timers_before = len(loop._scheduled)  # type: ignore[attr-defined]
        waiting = [asyncio.create_task(batcher.fill(FillMaskRequest(t))) for t in sentences(200, seed=12)]
        await asyncio.sleep(0.05)
        assert batcher.in_flight == 200
        assert len(loop._scheduled) - timers_before <= 2  # type: ignore[attr-defined]
        gated.gate.set()
        assert all(r.masks for r in await asyncio.gather(*waiting))


async def test_a_cancelled_caller_leaves_nothing_behind(bert_engine: FillMaskEngine) -> None:
    gated = GatedEngine(bert_engine)
    async with gated_batcher(gated) as batcher:
        first = asyncio.create_task(batcher.fill(FillMaskRequest("the [MASK] sat .")))
        await asyncio.sleep(0.05)  # its batch is at the model, waiting at the gate
        second = asyncio.create_task(batcher.fill(FillMaskRequest("a cat [MASK] .")))
        await asyncio.sleep(0.05)  # tokenized, waiting for the model
        for task in (first, second):
            task.cancel()
        await asyncio.gather(first, second, return_exceptions=True)
        assert batcher.in_flight == 0
        gated.gate.set()
        assert (await batcher.fill(FillMaskRequest("the cat [MASK] ."))).masks
        assert batcher.queue_depth == 0
        assert gated.forward_sizes == [1, 1]  # the cancelled second never reached the model


async def test_close_drains_admitted_work_and_refuses_new(bert_engine: FillMaskEngine) -> None:
    gated = GatedEngine(bert_engine)
    gated.gate.clear()
    batcher = MicroBatcher(gated)  # type: ignore[arg-type]
    await batcher.start()
    tasks = [asyncio.create_task(batcher.fill(FillMaskRequest(t))) for t in sentences(10, seed=9)]
    await asyncio.sleep(0.05)
    closing = asyncio.create_task(batcher.close())
    await asyncio.sleep(0.05)
    with pytest.raises(ShuttingDownError):
        await batcher.fill(FillMaskRequest("the [MASK] sat ."))
    gated.gate.set()
    await closing
    assert all(len(t.result().masks[0]) == 5 for t in tasks)


async def test_requests_still_inside_when_close_gives_up_hear_it_at_once(bert_engine: FillMaskEngine) -> None:
    gated = GatedEngine(bert_engine)
    gated.gate.clear()
    batcher = MicroBatcher(gated)  # type: ignore[arg-type]
    await batcher.start()
    at_model = asyncio.create_task(batcher.fill(FillMaskRequest("the [MASK] sat .")))
    await asyncio.sleep(0.05)
    queued = [asyncio.create_task(batcher.fill(FillMaskRequest(t))) for t in sentences(5, seed=13)]
    joint = asyncio.create_task(batcher.fill_joint(FillMaskRequest("the [MASK] sat on the [MASK] .")))
    await asyncio.sleep(0.05)
    await batcher.close(timeout=0.1)
    outcomes = await asyncio.wait_for(asyncio.gather(at_model, *queued, joint, return_exceptions=True), 2)
    assert all(isinstance(o, ShuttingDownError) for o in outcomes), outcomes
    gated.gate.set()


async def test_joint_fill_through_the_batcher_equals_the_engine(engine: FillMaskEngine) -> None:
    batcher = MicroBatcher(engine)
    await batcher.start()
    try:
        for text in sentences(4, seed=10, masks=3, mask=engine.mask_token):
            assert await batcher.fill_joint(FillMaskRequest(text)) == engine.fill_joint(text)
    finally:
        await batcher.close()


async def test_tokenization_and_decoding_stay_off_the_model_thread(bert_engine: FillMaskEngine) -> None:
    threads: dict[str, set[str]] = {"prepare": set(), "forward": set(), "postprocess": set()}

    class Spy(GatedEngine):
        def prepare_batch(self, requests):
            threads["prepare"].add(threading.current_thread().name)
            return self._engine.prepare_batch(requests)

        def postprocess(self, batch, outputs):
            threads["postprocess"].add(threading.current_thread().name)
            return self._engine.postprocess(batch, outputs)

        def forward(self, batch):
            threads["forward"].add(threading.current_thread().name)
            return self._engine.forward(batch)

    batcher = MicroBatcher(Spy(bert_engine))  # type: ignore[arg-type]
    await batcher.start()
    try:
        await asyncio.gather(*(batcher.fill(FillMaskRequest(t)) for t in sentences(10, seed=11)))
    finally:
        await batcher.close()
    assert threads["forward"] and all(name.startswith("mlm-model") for name in threads["forward"])
    assert not (threads["prepare"] | threads["postprocess"]) & threads["forward"]
    assert threading.main_thread().name not in threads["prepare"] | threads["postprocess"]


def test_plan_batch_groups_similar_lengths_around_the_oldest() -> None:
    lengths = [10, 50, 11, 52, 9, 10, 300]
    assert sorted(plan_batch(lengths, 32, 16_384)) == [0, 2, 4, 5]  # the 50s and the 300 would be mostly padding
    assert 0 in plan_batch([300, *lengths[1:]], 32, 16_384)  # the oldest always goes
    assert len(plan_batch(lengths, 3, 16_384)) == 3  # batch size limit
    chosen = plan_batch([50, 52, 51, 49, 50], 32, 150)  # token budget: 3 x 50ish
    assert 0 in chosen and len(chosen) * max([50, 52, 51, 49, 50][i] for i in chosen) <= 150


async def test_fill_many_raises_the_first_error_and_leaves_nothing_behind(bert_engine: FillMaskEngine) -> None:
    batcher = MicroBatcher(bert_engine)
    await batcher.start()
    try:
        requests = [
            FillMaskRequest("the [MASK] sat ."),
            FillMaskRequest("a [MASK]", top_k=0),
            FillMaskRequest("b [MASK]"),
        ]
        with pytest.raises(InvalidParameterError, match="top_k"):
            await batcher.fill_many(requests)
        assert batcher.in_flight == 0 and batcher.queue_depth == 0
        good = await batcher.fill_many([requests[0], requests[2]])
        assert [len(r.masks[0]) for r in good] == [5, 5]
    finally:
        await batcher.close()


async def test_chat_requests_go_before_background_work_which_runs_in_small_batches(
    bert_engine: FillMaskEngine,
) -> None:
    """The playground's requests (background) wait while any chat request does, and go out at most
    ``background_batch_size`` at a time, so a chat request that comes in waits for a small batch at most."""
    gated = GatedEngine(bert_engine)
    async with gated_batcher(gated, background_batch_size=8) as batcher:
        first = asyncio.create_task(batcher.fill(FillMaskRequest("the [MASK] sat .", background=True)))
        await asyncio.sleep(0.1)  # inside the model
        done: list[str] = []
        texts = sentences(20, seed=6)
        waiting = [asyncio.create_task(batcher.fill(FillMaskRequest(t, background=True))) for t in texts]
        for task in waiting:
            task.add_done_callback(lambda _: done.append("background"))
        await asyncio.sleep(0.1)
        batcher.seconds_per_input = 0.1
        assert batcher.backlog_seconds() == pytest.approx(2.0), "20 waiting at 0.1 s each"
        chat = asyncio.create_task(batcher.fill(FillMaskRequest("a [MASK] ran .")))
        chat.add_done_callback(lambda _: done.append("chat"))
        await asyncio.sleep(0.1)
        assert batcher.backlog_seconds() == pytest.approx(2.0), "the chat request is not background work"
        gated.gate.set()
        await asyncio.gather(first, chat, *waiting)
    assert done[0] == "chat"
    assert gated.forward_sizes == [1, 1, 8, 8, 4]
    assert batcher.backlog_seconds() == 0.0
