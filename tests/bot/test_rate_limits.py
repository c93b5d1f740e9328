"""The bot's own pacing of Telegram's flood limits: a private chat gets a short burst then one message a second,
a 429 holds back its own chat only, reactions and "typing..." do not spend a chat's allowance, messages to a
group still do. A burst of predictions is told from a person by how many began within a second."""

from __future__ import annotations

import asyncio

import pytest
from telegram.error import RetryAfter

from bot.flood_control import BUSY_AT, BotRateLimiter, PredictionStarts

GROUP = -1001555000111


async def _call(limiter: BotRateLimiter, endpoint: str, chat_id: int = GROUP) -> str:
    async def request() -> str:
        return endpoint

    return await limiter.process_request(request, (), {}, endpoint, {"chat_id": chat_id}, None)


async def test_a_private_chat_gets_a_short_burst_then_one_message_a_second() -> None:
    limiter = BotRateLimiter(private_burst=3, private_per_second=5)  # 5 a second here, to keep the test short
    loop = asyncio.get_running_loop()
    started = loop.time()
    done: list[float] = []

    async def send() -> None:
        await _call(limiter, "sendMessage", 42)
        done.append(loop.time() - started)

    await asyncio.gather(*(send() for _ in range(8)))
    assert max(done[:3]) < 0.1, "the burst goes at once"
    assert done[-1] >= (8 - 3) / 5 - 0.05, "the rest at the chat's pace"
    # "typing..." and another person's chat do not wait behind this chat's messages.
    quick = loop.time()
    await asyncio.gather(_call(limiter, "sendChatAction", 42), _call(limiter, "sendMessage", 43))
    assert loop.time() - quick < 0.1


async def test_a_429_holds_back_that_chat_only() -> None:
    limiter = BotRateLimiter(max_retries=2)
    loop = asyncio.get_running_loop()
    refused_once: set[int] = set()
    answered: dict[int, float] = {}
    started = loop.time()

    def call(chat_id: int):
        async def request() -> int:
            if chat_id == 1 and chat_id not in refused_once:
                refused_once.add(chat_id)
                raise RetryAfter(1)
            answered[chat_id] = loop.time() - started
            return chat_id

        return limiter.process_request(request, (), {}, "sendMessage", {"chat_id": chat_id}, None)

    first = asyncio.create_task(call(1))
    await asyncio.sleep(0.05)  # chat 1 has been told to wait
    assert await asyncio.gather(call(2), call(3)) == [2, 3]
    assert answered[2] < 0.5 and answered[3] < 0.5, "other chats go on while chat 1 waits"
    second_in_one = asyncio.create_task(call(1))
    assert await first == 1 and await second_in_one == 1
    assert answered[1] >= 1.0, "chat 1 waited what Telegram asked"
    assert limiter.held_back == 1


async def test_a_429_that_keeps_coming_is_raised_after_the_retries() -> None:
    limiter = BotRateLimiter(max_retries=1)

    async def request() -> None:
        raise RetryAfter(0)

    with pytest.raises(RetryAfter):
        await limiter.process_request(request, (), {}, "sendMessage", {"chat_id": 5}, None)


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
    starts = PredictionStarts(window=1.0, clock=lambda: now[0])
    assert [starts.bursting() for _ in range(BUSY_AT)] == [False] * BUSY_AT  # a few people at once: typing
    assert starts.bursting() and starts.bursting()  # the next ones in the same second: a burst
    now[0] += 0.9
    assert starts.bursting()  # still within a second of the first ones
    now[0] += 1.0
    assert not starts.bursting()  # a quiet second later, one person again
