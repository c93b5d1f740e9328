"""/forget (delete everything about me, after a confirmation) and the daily retention job.

/forget deletes the person's rows in every table (``bot.storage.repository._forget``: their dead letters too), and
what this process holds about them in memory (``BotServices.forget_person``); writes of
theirs still in flight are dropped (``InteractionWriter.forget``). They read "done" only once the deletion has
committed; "still being deleted" while the database is away; "failed, try again" if it refused.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta, timezone

from telegram import InlineKeyboardButton, InlineKeyboardMarkup, Update

from bot.handlers.common import Context, answer_query, visible_message
from bot.storage.writer import Forgotten

log = logging.getLogger(__name__)

PATTERN = r"\Aforget:(yes|no)\Z"  # the two buttons of _confirm_keyboard


def _confirm_keyboard(context: Context) -> InlineKeyboardMarkup:
    text = context.bot_data.services.renderer.text
    return InlineKeyboardMarkup(
        [
            [
                InlineKeyboardButton(text("button_forget_yes"), callback_data="forget:yes"),
                InlineKeyboardButton(text("button_forget_no"), callback_data="forget:no"),
            ]
        ]
    )


async def forget_command(update: Update, context: Context) -> None:
    s = context.bot_data.services
    await update.effective_message.reply_html(
        s.renderer.html("forget_confirm"), reply_markup=_confirm_keyboard(context)
    )


async def forget_button(update: Update, context: Context) -> None:
    s = context.bot_data.services
    query = update.callback_query
    user_id = update.effective_user.id
    await answer_query(update, context)
    deleted = query.data == "forget:yes"
    outcome = None
    if deleted:
        # In order with every other write, and final: what of theirs is still on its way is dropped.
        outcome = await s.writer.forget(user_id)
        context.bot_data.forget_person(user_id)  # and what this process holds about them
        log.info("a person asked to be forgotten: %s", outcome.value)
    done = s.renderer.html("forget_done", deleted=deleted, outcome=outcome.value if outcome else None)
    # Refused: the question again, so they can try once more.
    keyboard = _confirm_keyboard(context) if outcome is Forgotten.FAILED else None
    if visible_message(update) is not None:
        await query.edit_message_text(done, reply_markup=keyboard)
    else:  # the question is too old for the bot to see (or edit): say it in a new message
        await context.bot.send_message(user_id, done, reply_markup=keyboard)


async def private_only(update: Update, context: Context) -> None:
    await update.effective_message.reply_html(
        context.bot_data.services.renderer.html("private_only", bot_username=context.bot.username)
    )


async def retention_job(context: Context) -> None:
    """Daily (and at start-up): texts older than RETENTION_DAYS are removed (counts and timings stay), and so are
    people not seen for that long, old comment records and dead letters; finished updates leave the inbox after
    a day."""
    s = context.bot_data.services
    cutoff = datetime.now(timezone.utc) - timedelta(days=s.settings.retention_days)
    await s.writer.flush()
    redacted = await s.repo.interactions.redact_older_than(cutoff)
    forgotten = await s.repo.comments.delete_older_than(cutoff)
    inactive = await s.repo.users.forget_inactive(cutoff)
    pruned = await s.repo.inbox.prune(datetime.now(timezone.utc) - timedelta(days=1))  # finished updates
    # Tap sentences are texts people typed; a quiz not answered for a day is abandoned (as its memory copy is).
    await s.repo.state.delete_older_than(cutoff, datetime.now(timezone.utc) - timedelta(days=1))
    letters = await s.repo.dead_letters.prune(cutoff)
    level = logging.INFO if pruned or redacted or forgotten or inactive or letters else logging.DEBUG  # quiet idle
    log.log(level, "retention: pruned %d finished updates from the inbox", pruned)
    log.log(
        level, "retention: removed the texts of %d interactions, %d old comment records, %d people not seen since %s "
        "and %d dead letters", redacted, forgotten, inactive, cutoff.date(), letters,
    )  # fmt: skip
