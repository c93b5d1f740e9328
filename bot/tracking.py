"""Following each update through the handlers: metrics, and the fields every log line carries.

A handler in the first group starts an :class:`UpdateTrace` (in a context variable, so every log line written
while the update is handled carries its update id, user id, chat type and type); a handler in the last group but
one ends it: the handler-latency histogram, and one "update handled" line with the outcome. Interactions the
handlers log (``BotServices.log``) count as replies by kind and outcome, and give the trace its outcome.

``LOG_FORMAT=json`` writes these fields as JSON keys for log shippers; the text format stays short. Whatever the
format, the bot token (and the webhook secret) are replaced by ``<token>`` in every formatted line, traceback
included.
"""

from __future__ import annotations

import logging
import time
from contextvars import ContextVar
from dataclasses import dataclass
from typing import TYPE_CHECKING

from pythonjsonlogger.json import JsonFormatter
from telegram import Update

if TYPE_CHECKING:
    from bot.services import Context

log = logging.getLogger("bot.updates")

FIRST_GROUP = -100


@dataclass
class UpdateTrace:
    update_id: int
    type: str
    user_id: int | None
    chat_type: str | None
    started: float
    kind: str | None = None  # of the last interaction logged for it
    outcome: str | None = None


CURRENT: ContextVar[UpdateTrace | None] = ContextVar("mlm_bot_update", default=None)


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
    context.bot_data.services.metrics.updates.labels(trace.type).inc()


async def finish(update: object, context: Context) -> None:
    trace = CURRENT.get()
    if not isinstance(update, Update) or trace is None or trace.update_id != update.update_id:
        return
    seconds = time.monotonic() - trace.started
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


def record_outcome(kind: str, outcome: str) -> None:
    trace = CURRENT.get()
    if trace is not None:
        trace.kind, trace.outcome = kind, outcome


# ------------------------------------------------------------------------------------------------ log format
_secrets: set[str] = set()


def redact(*secrets: str) -> None:
    """Never print these (the bot token, the webhook secret) in a log line."""
    _secrets.update(s for s in secrets if s)


def _redacted(text: str) -> str:
    for secret in _secrets:
        text = text.replace(secret, "<token>")
    return text


class UpdateFields(logging.Filter):
    """Adds ``update_id``, ``user_id``, ``chat_type`` and ``update_type`` to records written while an update
    is being handled."""

    def filter(self, record: logging.LogRecord) -> bool:
        trace = CURRENT.get()
        if trace is not None:
            record.update_id = trace.update_id
            record.user_id = trace.user_id
            record.chat_type = trace.chat_type
            record.update_type = trace.type
        return True


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return _redacted(super().format(record))


class JSONFormatter(JsonFormatter):
    def format(self, record: logging.LogRecord) -> str:
        return _redacted(super().format(record))


LOG_FORMATS = ("text", "json")


def formatter(kind: str) -> logging.Formatter:
    if kind == "json":
        return JSONFormatter(
            "%(asctime)s %(levelname)s %(name)s %(message)s",
            rename_fields={"asctime": "time", "levelname": "level", "name": "logger", "exc_info": "traceback"},
        )
    return TextFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
