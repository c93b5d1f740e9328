"""Per-user flood control, with a fake clock."""

from __future__ import annotations

from bot.limits import UserGate


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_sliding_window_rate_limit() -> None:
    clock = Clock()
    gate = UserGate(3, clock=clock)
    assert [gate.check(1) for _ in range(3)] == [None, None, None]
    refusal = gate.check(1)
    assert refusal is not None and refusal.code == "rate_limited" and refusal.retry_after == 60
    assert gate.check(2) is None  # other users are not affected
    clock.now += 30
    assert gate.check(1).retry_after == 30
    clock.now += 30
    assert gate.check(1) is None  # the oldest request left the window


def test_one_request_in_flight() -> None:
    gate = UserGate(10)
    with gate.enter(7) as first:
        assert first is None
        with gate.enter(7) as second:
            assert second is not None and second.code == "in_flight"
        with gate.enter(8) as other:
            assert other is None
    with gate.enter(7) as again:
        assert again is None


def test_inline_gate_allows_overlapping_requests() -> None:
    gate = UserGate(10, one_at_a_time=False)
    with gate.enter(7) as first, gate.enter(7) as second:
        assert first is None and second is None
