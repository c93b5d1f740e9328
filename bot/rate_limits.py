"""Telegram's flood limits, as python-telegram-bot's AIORateLimiter paces them, plus what it cannot know.

AIORateLimiter counts every call that names a group's chat id against that group's allowance (about 20
messages a minute). Reactions are not messages: a 👍 on each of 26 keyword comments from people who had
started the bot used 26 slots, and delayed the next public reply under the post by 21 s. Reactions here count
against the bot's overall 30 calls a second only.

It also says whether calls are waiting (``busy``): a "typing..." action is worth sending when the bot is idle,
and is one call too many in a burst, where it takes the place of a reply in the 30-a-second allowance (300
people each sending a sentence cost 300 actions plus 300 replies: 19 s to drain instead of 10).
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

from telegram.ext import AIORateLimiter

OUTSIDE_GROUP_ALLOWANCE = frozenset({"setMessageReaction"})
BUSY_AT = 3  # calls inside the limiter at once from which courtesy calls are skipped


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
