"""Per-person limits: one budget for everything a person asks of the bot, and, for model calls, a sliding window
and one request in flight.

Every map here is keyed by people a stranger can invent, so every one is a ``cachetools`` cache with a size cap
and an expiry: a million distinct ids cost at most ``keep`` entries (see ``tests/bot/test_bounded_memory.py``).
"""

from __future__ import annotations

import enum
import math
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from aiolimiter import AsyncLimiter
from cachetools import TTLCache

KEEP = 100_000  # people remembered at once by each limit (the least recently seen are forgotten first)


@dataclass(frozen=True)
class Refusal:
    code: str  # "in_flight" or "rate_limited" (templates/messages/error.html)
    retry_after: int = 0


class ModelCallLimit:
    """``with gate.enter(user_id) as refusal:`` -> ``refusal`` is None when the user may go ahead."""

    def __init__(
        self,
        per_minute: int,
        *,
        one_at_a_time: bool = True,
        clock: Callable[[], float] = time.monotonic,
        keep: int = KEEP,
    ) -> None:
        self.per_minute = per_minute
        self.one_at_a_time = one_at_a_time
        self._clock = clock
        # A person's requests of the last minute (a tuple: a fifth of a deque's memory); forgotten a minute after
        # their last one (by then all of them have left the window anyway), or earlier when ``keep`` newer people
        # push them out.
        self._recent: TTLCache[int, tuple[float, ...]] = TTLCache(keep, ttl=60, timer=clock)
        self._in_flight: set[int] = set()  # bounded by the requests running at once

    def check(self, user_id: int) -> Refusal | None:
        """Admit (and count) one request, or say why not."""
        if self.one_at_a_time and user_id in self._in_flight:
            return Refusal("in_flight")
        now = self._clock()
        recent = tuple(t for t in self._recent.get(user_id, ()) if now - t < 60)
        if len(recent) >= self.per_minute:
            self._recent[user_id] = recent
            return Refusal("rate_limited", max(1, math.ceil(60 - (now - recent[0]))))
        self._recent[user_id] = (*recent, now)  # (re)set: the minute of memory counts from this request
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

    def forget(self, user_id: int) -> None:
        self._recent.pop(user_id, None)

    def __len__(self) -> int:
        return len(self._recent)


class Verdict(enum.Enum):
    GO = "go"  # answer it
    WARN = "warn"  # over the budget: one short "slow down" (the first this minute)
    QUIET = "quiet"  # over the budget and already told: nothing


class ActionBudget:
    """One budget per person for everything the bot answers them: a burst of ``per_minute`` actions, then
    ``per_minute`` a minute (aiolimiter's leaky bucket), and at most ``in_flight`` actions still being answered
    at once (a guide takes seconds to send at Telegram's pace: a script would otherwise pile up work that holds
    the bot's update slots for minutes). Over it: ``WARN`` once a minute, ``QUIET`` otherwise."""

    def __init__(
        self, per_minute: int, in_flight: int, *, warn_every: float = 60.0, period: float = 60.0, keep: int = KEEP
    ) -> None:
        self.per_minute = per_minute
        self.in_flight = in_flight
        self.period = period
        # A bucket is re-set on every use, so it is dropped only after ``period`` without one: by then it has
        # leaked empty, and a new one is the same.
        self._buckets: TTLCache[int, AsyncLimiter] = TTLCache(keep, ttl=period)
        self._warned: TTLCache[int, None] = TTLCache(keep, ttl=warn_every)
        self._running: dict[int, int] = {}  # actions being answered; an entry leaves at zero

    async def admit(self, person: int) -> Verdict:
        bucket = self._buckets.get(person) or AsyncLimiter(self.per_minute, self.period)
        self._buckets[person] = bucket
        if self._running.get(person, 0) < self.in_flight and bucket.has_capacity():
            await bucket.acquire()  # has capacity: returns at once
            self._running[person] = self._running.get(person, 0) + 1
            return Verdict.GO
        if person in self._warned:
            return Verdict.QUIET
        self._warned[person] = None
        return Verdict.WARN

    def done(self, person: int) -> None:
        """An admitted action has been answered (or failed)."""
        left = self._running.get(person, 0) - 1
        if left > 0:
            self._running[person] = left
        else:
            self._running.pop(person, None)

    def forget(self, person: int) -> None:
        self._buckets.pop(person, None)
        self._warned.pop(person, None)

    def sizes(self) -> dict[str, int]:
        return {"buckets": len(self._buckets), "warned": len(self._warned), "running": len(self._running)}
