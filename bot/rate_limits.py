"""Telegram's flood limits, as python-telegram-bot's AIORateLimiter paces them, plus what it cannot know.

AIORateLimiter counts every call that names a group's chat id against that group's allowance (about 20
messages a minute). Reactions are not messages: a 👍 on each of 26 keyword comments from people who had
started the bot used 26 slots, and delayed the next public reply under the post by 21 s. Reactions here count
against the bot's overall 30 calls a second only.

It also says whether calls are waiting (``busy``): a "typing..." action is worth sending when the bot is idle,
and is one call too many in a burst, where it takes the place of a reply in the 30-a-second allowance (300
people each sending a sentence cost 300 actions plus 300 replies: 19 s to drain instead of 10). Calls in flight
alone do not tell a burst on a loaded machine (Telegram answered, the limiter is empty for a moment, and the
next few updates each sent "typing..." again: 11 to 18 actions for 40 sentences, where 10 was the aim), so
``Starts`` also counts how many predictions began in the last second.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Coroutine
from typing import Any

from telegram.ext import AIORateLimiter

OUTSIDE_GROUP_ALLOWANCE = frozenset({"setMessageReaction"})
BUSY_AT = 3  # calls inside the limiter at once (or predictions begun within a second) past which courtesy is skipped


class BotRateLimiter(AIORateLimiter):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.in_flight = 0

    @property
    def busy(self) -> bool:
        """Calls to Telegram are queued or under way: skip what is only a courtesy."""
        return self.in_flight >= BUSY_AT

    async def process_request(
        self,
        callback: Callable[..., Coroutine[Any, Any, Any]],
        args: Any,
        kwargs: dict[str, Any],
        endpoint: str,
        data: dict[str, Any],
        rate_limit_args: int | None,
    ) -> Any:
        if endpoint in OUTSIDE_GROUP_ALLOWANCE and data.get("chat_id") is not None:
            # The limiter reads the chat id from ``data`` only to pick its buckets; the request itself is in
            # args/kwargs. A non-negative id keeps the overall bucket and leaves the group's alone.
            data = {**data, "chat_id": 0}
        self.in_flight += 1
        try:
            return await super().process_request(callback, args, kwargs, endpoint, data, rate_limit_args)
        finally:
            self.in_flight -= 1


class Starts:
    """Predictions begun within the last ``window`` seconds: more than ``BUSY_AT`` of them is a burst."""

    def __init__(self, window: float = 1.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.window = window
        self._clock = clock
        self._times: deque[float] = deque()

    def bursting(self) -> bool:
        """Record one start; True when more than ``BUSY_AT`` began within the window, this one included."""
        now = self._clock()
        while self._times and now - self._times[0] >= self.window:
            self._times.popleft()
        self._times.append(now)
        return len(self._times) > BUSY_AT
