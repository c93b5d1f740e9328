"""The last line of defence: log with context (never the token), answer the user politely."""

from __future__ import annotations

import contextlib
import logging

from telegram import Update
from telegram.error import NetworkError, TelegramError

from bot.handlers.common import Context, log_interaction
from bot.logs import pseudonym
from bot.storage.vocabulary import Kind

log = logging.getLogger("bot.errors")


async def error_handler(update: object, context: Context) -> None:
    error = context.error
    if not isinstance(update, Update):
        log.error("error outside an update: %r", error, exc_info=error)
        return
    chat = update.effective_chat
    user = update.effective_user
    # Telegram out of reach past the rate limiter's retries (bot.flood_control): one line, each try already
    # logged; a traceback would only show python-telegram-bot's HTTP stack. Anything else is a bug: its traceback.
    trouble = isinstance(error, NetworkError)
    log.log(
        logging.WARNING if trouble else logging.ERROR,
        "%s update %s (kind=%s chat=%s type=%s user=%s): %r",
        "a call to Telegram failed after its retries, handling" if trouble else "error handling",
        update.update_id,
        _kind(update),
        chat.id if chat and chat.type != chat.PRIVATE else None,  # a private chat's id is the person's
        chat.type if chat else None,
        pseudonym(user.id) if user else None,
        error,
        exc_info=None if trouble else error,
    )
    with contextlib.suppress(Exception):
        await log_interaction(update, context, Kind.ERROR, outcome=type(error).__name__[:32])
    if update.callback_query is not None and update.callback_query.id not in context.bot_data.answered:
        with contextlib.suppress(TelegramError):
            await update.callback_query.answer()
    if chat is not None and chat.type == chat.PRIVATE:
        with contextlib.suppress(TelegramError):
            await context.bot.send_message(chat.id, context.bot_data.services.renderer.error("internal"))


def _kind(update: Update) -> str:
    for name in ("message", "edited_message", "callback_query", "inline_query", "channel_post", "my_chat_member"):
        if getattr(update, name, None) is not None:
            return name
    return "other"
