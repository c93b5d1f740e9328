"""Telegram's flood limits, kept by the bot itself so that Telegram never has to refuse a chat, and a refusal that
still comes holds back that chat only.

python-telegram-bot's ``AIORateLimiter`` paces the bot's 30 calls a second and each group's ~20 messages a minute,
but not private chats, and a 429 for any one chat pauses *every* chat until ``retry_after`` has passed: one person
sending "MLM" sixty times in ten seconds made Telegram refuse their chat, and the whole bot then waited. Here,
on python-telegram-bot's ``BaseRateLimiter`` and aiolimiter's leaky buckets (the ones ``AIORateLimiter`` uses):

* every call that names a chat shares the overall bucket (30 a second);
* messages and edits (``PER_CHAT``) also take their chat's own bucket: a private chat a short burst of
  ``private_burst`` then one a second, a group or channel its ~20 a minute. Reactions and "typing..." are not
  messages: they skip it (a 👍 on each of 26 keyword comments had delayed the next public reply by 21 s);
* a 429 (``RetryAfter``) holds back that chat alone for ``retry_after``, then the call is tried again (up to
  ``max_retries`` times);
* a call that fails on the way is tried again with backoff (0.5 s, doubling, up to ``MAX_NETWORK_RETRIES``
  times for a reply to someone, ``BOT_CALL_RETRIES`` for the bot's own calls such as getMe) when repeating it
  cannot double anything: it never left this machine (a connection refused, no connection free), Telegram
  answered that it failed (5xx but 504, ``bot.telegram_request``), or it does the same thing however often it
  arrives (edits, settings, reads, a button's answer). A message whose call may have arrived (the connection
  dropped mid-way, an answer that is not JSON, a 504, no answer within ``bot.telegram_request.READ_TIMEOUT_S``)
  is sent again too, at most ``MAX_DOUBTFUL_REPEATS`` times: at least once, and a copy only where a failed
  attempt did in fact arrive. Copies stay rare because Telegram is given 15 s to answer, not python-telegram-
  bot's 5: a slow answer is waited for, not sent again.

The buckets of the chats with calls under way are kept while they are; the others' for a minute after their last
call (``cachetools``, with a size cap), by when they have leaked empty.

It also says whether calls are waiting (``busy``): a "typing..." action is worth sending when the bot is idle,
and is one call too many in a burst, where it takes the place of a reply in the 30-a-second allowance (300
people each sending a sentence cost 300 actions plus 300 replies: 19 s to drain instead of 10). Calls in flight
alone do not tell a burst on a loaded machine (Telegram answered, the limiter is empty for a moment, and the
next few updates each sent "typing..." again: 11 to 18 actions for 40 sentences, where 10 was the aim), so
``PredictionStarts`` also counts how many predictions began in the last second.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import warnings
from collections import deque
from collections.abc import Callable, Coroutine, Iterator
from datetime import timedelta
from typing import Any

import httpx
from aiolimiter import AsyncLimiter
from cachetools import TTLCache
from telegram.constants import FloodLimit
from telegram.error import BadRequest, NetworkError, RetryAfter
from telegram.ext import BaseRateLimiter
from telegram.warnings import PTBDeprecationWarning

from bot.telegram_request import TelegramServerError

log = logging.getLogger(__name__)

BUSY_AT = 3  # calls inside the limiter at once (or predictions begun within a second) past which courtesy is skipped
KEEP = 100_000  # chats whose buckets are remembered at once
IDLE_BUCKET_KEPT_S = 60.0  # a chat's bucket after its last call: the longest a bucket takes to leak empty
# Calls that put a message into a chat (or change one): the ones Telegram counts per chat.
PER_CHAT_PREFIXES = ("send", "edit", "copyMessage", "forwardMessage", "stopPoll")
NOT_MESSAGES = frozenset({"sendChatAction"})
# Calls that do the same thing however often they arrive (Telegram takes one answer per query: a second is a
# 400 "query is already answered", read below as the first one's success).
IDEMPOTENT_PREFIXES = ("edit", "get", "set", "delete", "answer")
NETWORK_RETRY_S = 0.5  # before the first repeat of a call that failed on the way; doubled for each next one
NETWORK_RETRY_MAX_S = 8.0
MAX_NETWORK_RETRIES = 5  # repeats of one call after failures on the way (about 15 s of backoff in all)
# ... of a call that answers no one (getMe, the command menus, the webhook's registration): their callers have
# loops of their own (bot.runner's getMe, with one line a try), which a long wait here would only hold up.
BOT_CALL_RETRIES = 3
MAX_DOUBTFUL_REPEATS = 2  # ... of which repeats of a message that may have arrived (each can be a copy)


def paced_per_chat(endpoint: str) -> bool:
    return endpoint.startswith(PER_CHAT_PREFIXES) and endpoint not in NOT_MESSAGES


def never_sent(exc: BaseException) -> bool:
    """The request never left this machine (no connection, or none free): repeating it cannot double it."""
    return isinstance(exc.__cause__, (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout))


def not_done(exc: BaseException) -> bool:
    """The call surely did not take effect: it never left, or Telegram answered that it failed."""
    if isinstance(exc, TelegramServerError):
        return not exc.may_have_been_done
    return never_sent(exc)


def harmless_twice(endpoint: str) -> bool:
    """Calls that do the same thing however often they arrive."""
    return endpoint.startswith(IDEMPOTENT_PREFIXES) or endpoint in NOT_MESSAGES


def network_retries(endpoint: str, exc: NetworkError) -> int:
    """How many times in all a call may be repeated once it has failed like this: ``MAX_NETWORK_RETRIES`` when a
    repeat cannot double anything; ``MAX_DOUBTFUL_REPEATS`` when this failure may have let a message through (a
    reply is worth more than the small chance of seeing it twice)."""
    return MAX_NETWORK_RETRIES if not_done(exc) or harmless_twice(endpoint) else MAX_DOUBTFUL_REPEATS


def retry_after_seconds(exc: RetryAfter) -> float:
    """``retry_after`` in seconds, whichever type this python-telegram-bot gives it (an int is deprecated)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PTBDeprecationWarning)
        value = exc.retry_after
    return value.total_seconds() if isinstance(value, timedelta) else float(value)


class BotRateLimiter(BaseRateLimiter[int]):
    def __init__(
        self,
        *,
        overall_max_rate: float = FloodLimit.MESSAGES_PER_SECOND,
        overall_time_period: float = 1,
        group_max_rate: float = FloodLimit.MESSAGES_PER_MINUTE_PER_GROUP,
        group_time_period: float = 60,
        private_burst: int = 3,
        private_per_second: float = FloodLimit.MESSAGES_PER_SECOND_PER_CHAT,
        max_retries: int = 5,
        keep: int = KEEP,
    ) -> None:
        self._overall = AsyncLimiter(overall_max_rate, overall_time_period)
        self._group = (group_max_rate, group_time_period)
        self._private = (private_burst, private_burst / private_per_second)
        self.max_retries = max_retries
        # Each chat's bucket: in ``_busy`` while calls are in it or waiting for it (bounded by the calls in flight;
        # never dropped then, or a new bucket would let a second burst through), then ``_idle`` for a minute, by
        # when it has leaked empty and a new bucket is the same. Memory follows the chats of the last minute, not
        # every person the bot ever answered.
        self._busy: dict[int | str, tuple[AsyncLimiter, int]] = {}
        self._idle: TTLCache[int | str, AsyncLimiter] = TTLCache(keep, ttl=IDLE_BUCKET_KEPT_S)
        # Chats Telegram asked to wait (429), until when (the event loop's clock).
        self._held: TTLCache[int | str, float] = TTLCache(keep, ttl=3600)
        self.in_flight = 0
        self.held_back = 0  # 429s answered for one chat and waited out by that chat alone
        self.network_retries = 0  # calls tried again after a 5xx, a dropped connection or a timeout

    async def initialize(self) -> None:
        """Nothing to set up: the buckets are made as chats appear."""

    async def shutdown(self) -> None:
        """Nothing to release."""

    @property
    def busy(self) -> bool:
        """Calls to Telegram are queued or under way: skip what is only a courtesy."""
        return self.in_flight >= BUSY_AT

    @contextlib.contextmanager
    def _chat_bucket(self, chat_id: int | str) -> Iterator[AsyncLimiter]:
        """The chat's bucket, held busy for the length of the block."""
        busy = self._busy.get(chat_id)
        if busy is None:
            bucket = self._idle.pop(chat_id, None)
            if bucket is None:
                group = not isinstance(chat_id, int) or chat_id < 0  # "@channel" names are channels too
                bucket = AsyncLimiter(*(self._group if group else self._private))
            busy = (bucket, 0)
        self._busy[chat_id] = (busy[0], busy[1] + 1)
        try:
            yield busy[0]
        finally:
            bucket, users = self._busy[chat_id]
            if users > 1:
                self._busy[chat_id] = (bucket, users - 1)
            else:
                del self._busy[chat_id]
                self._idle[chat_id] = bucket

    async def _wait_if_held(self, chat_id: int | str | None) -> None:
        loop = asyncio.get_running_loop()
        # A loop, not one sleep: another 429 for the same chat may move its time on meanwhile.
        while chat_id is not None and (until := self._held.get(chat_id, 0.0)) > loop.time():  # noqa: ASYNC110
            await asyncio.sleep(until - loop.time())

    async def process_request(
        self,
        callback: Callable[..., Coroutine[Any, Any, Any]],
        args: Any,
        kwargs: dict[str, Any],
        endpoint: str,
        data: dict[str, Any],
        rate_limit_args: int | None,
    ) -> Any:
        chat_id = data.get("chat_id")
        with contextlib.suppress(ValueError, TypeError):
            chat_id = int(chat_id)  # type: ignore[arg-type]
        retries = rate_limit_args if rate_limit_args is not None else self.max_retries
        floods = failures = doubts = 0  # doubts: failed sends that may have reached Telegram all the same
        uncertain = False  # an attempt that failed may still have reached Telegram
        self.in_flight += 1
        try:
            while True:
                await self._wait_if_held(chat_id)
                paced = chat_id is not None and paced_per_chat(endpoint)
                try:
                    with self._chat_bucket(chat_id) if paced else contextlib.nullcontext() as per_chat:
                        async with (
                            per_chat or contextlib.nullcontext(),
                            self._overall if chat_id is not None else contextlib.nullcontext(),
                        ):
                            return await callback(*args, **kwargs)
                except RetryAfter as exc:
                    if floods == retries:
                        log.warning("Telegram refused %s %d times in a row (429): giving up", endpoint, floods + 1)
                        raise
                    floods += 1
                    wait = retry_after_seconds(exc)
                    self.held_back += 1
                    log.info("Telegram asked to wait %.0f s before %s in one chat: that chat waits", wait, endpoint)
                    if chat_id is None:
                        await asyncio.sleep(wait + 0.1)
                    else:
                        until = asyncio.get_running_loop().time() + wait + 0.1
                        self._held[chat_id] = max(self._held.get(chat_id, 0.0), until)
                except BadRequest:
                    if uncertain and endpoint.startswith("answer"):
                        return True  # the earlier answer did arrive: Telegram takes one per query, and has it
                    raise
                except NetworkError as exc:  # a 5xx, a connection dropped or refused, a timeout (TimedOut)
                    doubts += not (not_done(exc) or harmless_twice(endpoint))
                    most = (
                        MAX_NETWORK_RETRIES
                        if chat_id is not None or endpoint.startswith("answer")
                        else BOT_CALL_RETRIES
                    )
                    if failures >= most or doubts > MAX_DOUBTFUL_REPEATS:
                        raise
                    failures += 1
                    uncertain = uncertain or not not_done(exc)
                    self.network_retries += 1
                    log.warning(
                        "%s failed on the way (%s: %s); trying again (%d of at most %d)", endpoint,
                        type(exc).__name__, exc.message[:120], failures, min(most, network_retries(endpoint, exc)),
                    )  # fmt: skip
                    await asyncio.sleep(min(NETWORK_RETRY_MAX_S, NETWORK_RETRY_S * 2 ** (failures - 1)))
        finally:
            self.in_flight -= 1

    def sizes(self) -> dict[str, int]:
        return {"chats": len(self._busy) + len(self._idle), "busy": len(self._busy), "held": len(self._held)}


class PredictionStarts:
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
