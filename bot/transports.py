"""How updates reach the bot: long polling or a webhook, behind one small interface, so ``bot.runner`` reads as a
straight list of start-up and shut-down steps.

Both store every update in the inbox before Telegram is told it arrived (``bot.updates.inbox`` for polling,
``bot.http.webhook`` for the webhook), and both share ``handed_on``: the updates handed to the handlers and not
finished yet, so the start-up replay and the active process's look at the inbox never hand one on twice.
"""

from __future__ import annotations

import logging
from typing import Protocol

from telegram import Update
from telegram.error import TelegramError
from telegram.ext import Application

from bot.http.health import Health
from bot.http.webhook import Webhook, register_webhook, watch_webhook

log = logging.getLogger(__name__)


class Transport(Protocol):
    description: str  # for the "is up" line

    async def prepare(self) -> None:
        """Before the model loads (seconds to minutes): what Telegram must know from the first moment."""

    def open(self) -> None:
        """The application has started: updates that arrive from now on are handed on as they come (before the
        start-up replay, which skips them)."""

    async def start(self) -> None:
        """After the replay: take updates in."""

    async def stop(self) -> None:
        """No new updates from now on (what still arrives is stored, for the next start's replay)."""


class Polling:
    """``getUpdates`` long polling through the inbox (``bot.updates.inbox.install`` set the Updater up)."""

    description = "polling"

    def __init__(self, application: Application) -> None:
        self.application = application

    async def prepare(self) -> None:
        return None

    def open(self) -> None:
        return None

    async def start(self) -> None:
        await self.application.updater.start_polling(allowed_updates=Update.ALL_TYPES, error_callback=_poll_failed)

    async def stop(self) -> None:
        updater = self.application.updater
        if updater is not None and updater.running:
            await updater.stop()


def _poll_failed(error: TelegramError) -> None:
    """A poll that failed (the Updater tries again by itself): one line, not python-telegram-bot's traceback."""
    log.warning("polling Telegram failed (%s: %s); polling again", type(error).__name__, error.message[:120])


class WebhookTransport:
    """Telegram posts to ``WEBHOOK_URL``; the bot's HTTP server stores each update, then hands it on."""

    def __init__(self, application: Application, webhook: Webhook, health: Health) -> None:
        self.application, self.webhook, self.health = application, webhook, health
        self.description = f"webhook {webhook.url}"

    async def prepare(self) -> None:
        # Registered before the model loads: what Telegram posts meanwhile is stored, confirmed, answered once up.
        self.health.phase = "registering the webhook with Telegram"
        await register_webhook(self.application, self.webhook)

    def open(self) -> None:
        self.webhook.accepting = True

    async def start(self) -> None:
        watch_webhook(self.application, self.webhook, self.health)

    async def stop(self) -> None:
        self.webhook.accepting = False
