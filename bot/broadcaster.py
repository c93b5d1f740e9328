"""Sends the broadcasts ``mlm-bot broadcast`` queues (``bot.storage.broadcasts``), from the active process only.

One recipient at a time, mark-send-mark, so a kill leaves at most one row in doubt ("unknown", never resent).
Paced at ``BROADCAST_PER_SECOND`` (default 20, under Telegram's ~30 messages a second for a bot), and behind the
bot's own answers: before each message it waits until no other call is in the bot's rate limiter, so
someone talking to the bot during a broadcast is answered as fast as without it. 403 (blocked, deactivated)
unsubscribes the person; a 429 waits (the limiter's own retry); other failures are tried again a few times.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from aiolimiter import AsyncLimiter
from telegram import Bot, InlineKeyboardButton, InlineKeyboardMarkup
from telegram.error import BadRequest, Forbidden, TelegramError

from bot.handlers import lesson
from bot.storage.broadcasts import Recipient
from bot.storage.writer import is_transient

log = logging.getLogger(__name__)

IDLE_S = 2.0  # between looks for work when there is none
BATCH = 50  # recipients read at once (a cancel takes effect within a batch)
TRIES = 3
YIELD_S = 0.05  # the wait while the bot's own calls go first


class Broadcaster:
    def __init__(self, services, bot: Bot, per_second: float) -> None:  # services: bot.services.BotServices
        self._s = services
        self._bot = bot
        self._pace = AsyncLimiter(per_second, 1)
        self._stopping = asyncio.Event()
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="broadcaster")

    async def stop(self, timeout: float = 3.0) -> None:
        """Finish the message being sent (so it is not left in doubt), then stop; cancelled past ``timeout``."""
        self._stopping.set()
        if self._task is None:
            return
        done, _ = await asyncio.wait({self._task}, timeout=timeout)
        if not done:
            self._task.cancel()
            with contextlib.suppress(BaseException):
                await self._task

    async def _run(self) -> None:
        repo = self._s.repo.broadcasts
        try:
            doubtful = await repo.recover()
            if doubtful:
                log.warning("broadcast: %d messages were in flight at the last stop: counted as unknown", doubtful)
        except Exception as exc:
            log.warning("broadcast: could not look at the last run's messages (%s)", exc)
        while not self._stopping.is_set():
            try:
                batch = await repo.next_recipients(BATCH)
                for recipient in batch:
                    if self._stopping.is_set():
                        return
                    await self._send(recipient)
                for done in await repo.finish_done():  # nobody left pending: done, for --status and the log
                    log.info("broadcast %d is done", done)
                if not batch:
                    with contextlib.suppress(asyncio.TimeoutError):
                        await asyncio.wait_for(self._stopping.wait(), IDLE_S)
            except Exception as exc:
                if not is_transient(exc):
                    log.exception("broadcast: stopped by an error; trying again in a moment")
                else:
                    log.warning("broadcast: the database is away (%s); trying again in a moment", type(exc).__name__)
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), IDLE_S)

    async def _send(self, recipient: Recipient) -> None:
        repo = self._s.repo.broadcasts
        limiter = self._bot.rate_limiter
        while getattr(limiter, "in_flight", 0) > 0:  # noqa: ASYNC110 - the bot's answers (any other call) first
            await asyncio.sleep(YIELD_S)
        async with self._pace:
            pass
        if not await repo.claim(recipient):  # cancelled meanwhile, or another process took it
            return
        try:
            await self._bot.send_message(
                recipient.user_id, self._html(recipient), reply_markup=self._keyboard(recipient)
            )
        except Forbidden:  # blocked the bot, or the account is gone: never again
            await repo.mark(recipient, "blocked")
            await repo.unsubscribe(recipient.user_id)
        except BadRequest as exc:  # chat not found ...: trying again cannot help
            log.info("broadcast %d: Telegram refused one message (%s)", recipient.broadcast_id, exc.message)
            await repo.mark(recipient, "failed")
        except TelegramError as exc:  # the network, a 5xx, flood limits past the limiter's retries
            attempts = recipient.attempts + 1
            log.info("broadcast %d: a message failed (%s), try %d of %d", recipient.broadcast_id, exc, attempts, TRIES)
            await repo.mark(recipient, "pending" if attempts < TRIES else "failed", attempts=attempts)
        else:
            await repo.mark(recipient, "sent")

    def _html(self, recipient: Recipient) -> str:
        return self._s.renderer.html("broadcast", text=recipient.text)

    def _keyboard(self, recipient: Recipient) -> InlineKeyboardMarkup | None:
        guide = self._s.guides.get(recipient.guide)
        if guide is None:
            return None
        label = self._s.renderer.text("button_guide_named", title=guide.title)
        return InlineKeyboardMarkup([[InlineKeyboardButton(label, callback_data=lesson.start_data(guide))]])
