"""Per-user flood control: a sliding-window rate limit and, for predictions, one request in flight per user."""

from __future__ import annotations

import math
import time
from collections import defaultdict, deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass


@dataclass(frozen=True)
class Refusal:
    code: str  # "in_flight" or "rate_limited" (templates/messages/error.html)
    retry_after: int = 0


class UserGate:
    """``with gate.enter(user_id) as refusal:`` -> ``refusal`` is None when the user may go ahead."""

    def __init__(
        self, per_minute: int, *, one_at_a_time: bool = True, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.per_minute = per_minute
        self.one_at_a_time = one_at_a_time
        self._clock = clock
        self._recent: defaultdict[int, deque[float]] = defaultdict(deque)
        self._in_flight: set[int] = set()

    def check(self, user_id: int) -> Refusal | None:
        """Admit (and count) one request, or say why not."""
        if self.one_at_a_time and user_id in self._in_flight:
            return Refusal("in_flight")
        now = self._clock()
        recent = self._recent[user_id]
        while recent and now - recent[0] >= 60:
            recent.popleft()
        if len(recent) >= self.per_minute:
            return Refusal("rate_limited", max(1, math.ceil(60 - (now - recent[0]))))
        recent.append(now)
        return None

    @contextmanager
    def enter(self, user_id: int) -> Iterator[Refusal | None]:
        refusal = self.check(user_id)
        if refusal is not None:
            yield refusal
            return
        self._in_flight.add(user_id)
        try:
            yield None
        finally:
            self._in_flight.discard(user_id)
            self._forget_idle()

    def _forget_idle(self) -> None:
        """Drop users with nothing in the last minute, so the table does not grow with every user ever seen."""
        if len(self._recent) > 10_000:
            now = self._clock()
            for user_id in [u for u, r in self._recent.items() if not r or now - r[-1] >= 60]:
                del self._recent[user_id]
