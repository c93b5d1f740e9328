"""Per-person limits: the model gates (with a fake clock) and the one action budget."""

from __future__ import annotations

import asyncio

from bot.budgets import ActionBudget, ModelCallLimit, Verdict


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_sliding_window_rate_limit() -> None:
    clock = Clock()
    gate = ModelCallLimit(3, clock=clock)
    assert [gate.check(1) for _ in range(3)] == [None, None, None]
    refusal = gate.check(1)
    assert refusal is not None and refusal.code == "rate_limited" and refusal.retry_after == 60
    assert gate.check(2) is None  # other users are not affected
    clock.now += 30
    assert gate.check(1).retry_after == 30
    clock.now += 30
    assert gate.check(1) is None  # the oldest request left the window


def test_one_request_in_flight() -> None:
    gate = ModelCallLimit(10)
    with gate.enter(7) as first:
        assert first is None
        with gate.enter(7) as second:
            assert second is not None and second.code == "in_flight"
        with gate.enter(8) as other:
            assert other is None
    with gate.enter(7) as again:
        assert again is None


def test_inline_gate_allows_overlapping_requests() -> None:
    gate = ModelCallLimit(10, one_at_a_time=False)
    with gate.enter(7) as first, gate.enter(7) as second:
        assert first is None and second is None


async def test_the_action_budget_allows_a_burst_then_warns_once_then_is_quiet() -> None:
    budget = ActionBudget(per_minute=3, in_flight=10)
    verdicts = [await budget.admit(7) for _ in range(6)]
    assert verdicts == [Verdict.GO] * 3 + [Verdict.WARN, Verdict.QUIET, Verdict.QUIET]
    assert await budget.admit(8) is Verdict.GO, "one person's flood is not another's"


async def test_the_budget_refills_at_its_rate() -> None:
    budget = ActionBudget(per_minute=2, in_flight=10, period=0.4)  # 2 per 0.4 s: one back every 0.2 s
    assert [await budget.admit(7) for _ in range(3)] == [Verdict.GO, Verdict.GO, Verdict.WARN]
    await asyncio.sleep(0.25)
    assert await budget.admit(7) is Verdict.GO
    assert await budget.admit(7) is Verdict.QUIET  # over again; told already within the warning's minute


async def test_actions_still_being_answered_count_too() -> None:
    """A script that sends faster than its answers can go out (a guide takes seconds at Telegram's pace) holds no
    more than ``in_flight`` of the bot's update slots."""
    budget = ActionBudget(per_minute=100, in_flight=2)
    assert [await budget.admit(7) for _ in range(3)] == [Verdict.GO, Verdict.GO, Verdict.WARN]
    budget.done(7)
    assert await budget.admit(7) is Verdict.GO
    budget.done(7)
    budget.done(7)
    assert budget.sizes()["running"] == 0, "nobody's entry stays once their actions are answered"


async def test_the_warning_comes_again_after_its_minute() -> None:
    budget = ActionBudget(per_minute=1, in_flight=10, warn_every=0.2)
    assert [await budget.admit(7) for _ in range(3)] == [Verdict.GO, Verdict.WARN, Verdict.QUIET]
    await asyncio.sleep(0.25)
    assert await budget.admit(7) is Verdict.WARN
