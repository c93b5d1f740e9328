"""Reactions do not spend a group's ~20 messages a minute; messages to the group still do."""

from __future__ import annotations

import asyncio

import pytest

from bot.rate_limits import BotRateLimiter

GROUP = -1001555000111


async def _call(limiter: BotRateLimiter, endpoint: str) -> str:
    async def request() -> str:
        return endpoint

    return await limiter.process_request(request, (), {}, endpoint, {"chat_id": GROUP}, None)


async def test_reactions_skip_the_group_allowance_messages_do_not() -> None:
    limiter = BotRateLimiter(group_max_rate=1, group_time_period=60)  # one message a minute per group
    await limiter.initialize()
    try:
        assert await _call(limiter, "sendMessage") == "sendMessage"  # the minute's message
        reactions = asyncio.gather(*(_call(limiter, "setMessageReaction") for _ in range(26)))
        assert len(await asyncio.wait_for(reactions, 5)) == 26, "26 reactions must not wait for the group"
        with pytest.raises(asyncio.TimeoutError):  # the next message still waits for the group's allowance
            await asyncio.wait_for(_call(limiter, "sendMessage"), 1.0)
    finally:
        await limiter.shutdown()
