"""Telegram's flood limits, as python-telegram-bot's AIORateLimiter paces them, minus one thing it cannot know.

AIORateLimiter counts every call that names a group's chat id against that group's allowance (about 20
messages a minute). Reactions are not messages: a 👍 on each of 26 keyword comments from people who had
started the bot used 26 slots, and delayed the next public reply under the post by 21 s. Reactions here count
against the bot's overall 30 calls a second only.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

from telegram.ext import AIORateLimiter

OUTSIDE_GROUP_ALLOWANCE = frozenset({"setMessageReaction"})


class BotRateLimiter(AIORateLimiter):
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
        return await super().process_request(callback, args, kwargs, endpoint, data, rate_limit_args)
