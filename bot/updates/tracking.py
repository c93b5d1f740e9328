"""Following each update through the handlers: metrics, and the fields every log line carries.

A handler in the first group starts an :class:`UpdateTrace` (in a context variable, so every log line written
while the update is handled carries its update id, user id, chat type and type); a handler in the last group but
one ends it: the handler-latency histogram, and one "update handled" line with the outcome. Interactions the
handlers log (``BotServices.log``) count as replies by kind and outcome, and give the trace its outcome.

The log side (the fields on each line, the formats, redaction) is in ``bot.logs``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING

from telegram import Update

from bot.logs import CURRENT, UpdateTrace

if TYPE_CHECKING:
    from bot.context import Context

log = logging.getLogger("bot.updates")


def update_type(update: Update) -> str:
    """``message``, ``callback_query``, ``inline_query`` ...: the field the update carries."""
    for name in Update.ALL_TYPES:
        if getattr(update, name, None) is not None:
            return name
    return "other"


async def begin(update: object, context: Context) -> None:
    if not isinstance(update, Update):
        return
    chat, user = update.effective_chat, update.effective_user
    trace = UpdateTrace(
        update_id=update.update_id,
        type=update_type(update),
        user_id=user.id if user else None,
        chat_type=str(chat.type) if chat else None,
        started=time.monotonic(),
    )
    CURRENT.set(trace)
    services = context.bot_data.services
    services.metrics.updates.labels(trace.type).inc()
    task = asyncio.current_task()  # python-telegram-bot handles each update in a task of its own
    if task is not None:
        services.handling.add(task)
        task.add_done_callback(services.handling.discard)


async def finish(update: object, context: Context) -> None:
    trace = CURRENT.get()
    if not isinstance(update, Update) or trace is None or trace.update_id != update.update_id:
        return
    seconds = time.monotonic() - trace.started
    if trace.budget_person is not None:
        context.bot_data.services.budget.done(trace.budget_person)
        trace.budget_person = None  # once, even if finish is reached twice (bot.handlers.admission.stop_here)
    context.bot_data.services.metrics.handler_seconds.labels(trace.type).observe(seconds)
    # Updates that asked for nothing (a group's chatter, a member joining) at DEBUG: a busy group would
    # otherwise fill the log.
    level = logging.INFO if trace.outcome is not None else logging.DEBUG
    log.log(
        level,
        "update %s (%s) handled in %.0f ms: %s",
        trace.update_id,
        trace.type,
        seconds * 1000,
        f"{trace.kind} {trace.outcome}" if trace.outcome else "nothing to answer",
        extra={"kind": trace.kind, "outcome": trace.outcome or "ignored", "duration_ms": round(seconds * 1000, 1)},
    )
