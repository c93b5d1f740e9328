"""Log lines: the current update's fields on each, the text or JSON format, and no secrets in any.

``LOG_FORMAT=json`` writes one JSON object a line for log shippers, with ``update_id``, ``user_id``,
``chat_type`` and ``update_type`` on every line written while an update is handled (``bot.tracking`` starts and
ends that). Whatever the format, the bot token and the webhook secret are replaced by ``<token>`` in every
formatted line, tracebacks included. Kept free of python-telegram-bot and transformers: ``mlm-bot health`` runs
every 30 s in a container and should start fast.
"""

from __future__ import annotations

import logging
from contextvars import ContextVar
from dataclasses import dataclass

from pythonjsonlogger.json import JsonFormatter


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
