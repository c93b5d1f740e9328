"""/forget (delete everything about me, after a confirmation) and the daily retention job."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta, timezone

from telegram import InlineKeyboardButton, InlineKeyboardMarkup, Update

from bot.handlers.common import Context, answer_query, visible_message

log = logging.getLogger(__name__)


async def forget_command(update: Update, context: Context) -> None:
    s = context.bot_data.services
    text = s.renderer.text
    keyboard = InlineKeyboardMarkup(
        [
            [
                InlineKeyboardButton(text("button_forget_yes"), callback_data="forget:yes"),
                InlineKeyboardButton(text("button_forget_no"), callback_data="forget:no"),
            ]
        ]
    )
    await update.effective_message.reply_html(s.renderer.html("forget_confirm"), reply_markup=keyboard)


async def forget_button(update: Update, context: Context) -> None:
    s = context.bot_data.services
    query = update.callback_query
    await answer_query(update, context)
    deleted = query.data == "forget:yes"
    pending = False
    if deleted:
        # In order with every other write, and final: what of theirs is still on its way is dropped.
        pending = not await s.writer.forget(update.effective_user.id)
        log.info("deleted everything stored about a user on their request%s", " (still being written)" * pending)
    done = s.renderer.html("forget_done", deleted=deleted, pending=pending)  # still in the language they read
    if deleted:
        s.languages.forget(update.effective_user.id)
    if visible_message(update) is not None:
        await query.edit_message_text(done)
    else:  # the question is too old for the bot to see (or edit): say it in a new message
        await context.bot.send_message(update.effective_user.id, done)


async def private_only(update: Update, context: Context) -> None:
    await update.effective_message.reply_html(
        context.bot_data.services.renderer.html("private_only", bot_username=context.bot.username)
    )


async def retention_job(context: Context) -> None:
    """Daily (and at start-up): texts older than RETENTION_DAYS are removed; counts and timings stay."""
    s = context.bot_data.services
    cutoff = datetime.now(timezone.utc) - timedelta(days=s.settings.retention_days)
    await s.writer.flush()
    redacted = await s.repo.interactions.redact_older_than(cutoff)
    forgotten = await s.repo.comments.delete_older_than(cutoff)
    pruned = await s.repo.inbox.prune(datetime.now(timezone.utc) - timedelta(days=1))  # finished updates
    log.info("retention: pruned %d finished updates from the inbox", pruned)
    log.info("retention: removed the texts of %d interactions and %d old comment records", redacted, forgotten)
