"""Reactions do not spend a group's ~20 messages a minute; messages to the group still do. A burst of
predictions is told from a person by how many began within a second."""

from __future__ import annotations

import asyncio

import pytest

from bot.rate_limits import BUSY_AT, BotRateLimiter, Starts

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


def test_more_than_busy_at_predictions_within_a_second_is_a_burst_and_it_passes() -> None:
    now = [100.0]
    starts = Starts(window=1.0, clock=lambda: now[0])
    assert [starts.bursting() for _ in range(BUSY_AT)] == [False] * BUSY_AT  # a few people at once: typing
    assert starts.bursting() and starts.bursting()  # the next ones in the same second: a burst
    now[0] += 0.9
    assert starts.bursting()  # still within a second of the first ones
    now[0] += 1.0
    assert not starts.bursting()  # a quiet second later, one person again
