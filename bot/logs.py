"""Log lines: the current update's fields on each, the text or JSON format, and no secrets or people in any.

``LOG_FORMAT=json`` writes one JSON object a line for log shippers, with ``update_id``, ``user``, ``chat_type``
and ``update_type`` on every line written while an update is handled (``bot.updates.tracking`` starts and ends that).
``user`` is a pseudonym (``pseudonym``: an HMAC of the Telegram id, keyed by the bot's token), never the id: a
log line outlives /forget, so it must not name anyone. What people type is never logged either: the database
engine hides SQL parameters, and python-telegram-bot (which logs whole updates at DEBUG) is kept at INFO unless
``LOG_UPDATES=1`` asks for them on purpose. Whatever the format, the bot token and the webhook secret are
replaced by ``<token>`` in every formatted line, tracebacks included. Kept free of python-telegram-bot and
transformers: ``mlm-bot health`` runs every 30 s in a container and should start fast.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import secrets
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import datetime, timezone

from pythonjsonlogger.json import JsonFormatter


@dataclass
class UpdateTrace:
    update_id: int
    type: str
    user_id: int | None
    chat_type: str | None
    started: float
    began_at: datetime = field(default_factory=lambda: datetime.now(timezone.utc))  # wall clock, for /forget
    kind: str | None = None  # of the last interaction logged for it
    outcome: str | None = None
    budget_person: int | None = (
        None  # whose action budget this update holds until it is finished (bot.handlers.admission)
    )


CURRENT: ContextVar[UpdateTrace | None] = ContextVar("mlm_bot_update", default=None)


def update_began_at() -> datetime:
    """When the handling of the update in hand began (else now). A write stamped with it is dropped by a /forget
    that came after the update began, however late the write itself is handed over (``bot.storage.writer``)."""
    trace = CURRENT.get()
    return trace.began_at if trace is not None else datetime.now(timezone.utc)


_secrets: set[str] = set()
_pseudonym_key = secrets.token_bytes(32)  # until the bot's token gives a stable one


def set_pseudonym_key(token: str) -> None:
    """Pseudonyms stable across restarts and replicas of one bot (the same token), unrelated between bots."""
    global _pseudonym_key
    _pseudonym_key = hashlib.sha256(b"mlm-bot log pseudonyms\0" + token.encode()).digest()


def pseudonym(user_id: int | None) -> str | None:
    """What log lines call a person: 12 hex digits, the same for the same person, that do not give the id."""
    if user_id is None:
        return None
    return hmac.new(_pseudonym_key, str(user_id).encode(), hashlib.sha256).hexdigest()[:12]


# Loggers of the libraries that would print people's words or the token below these levels.
LIBRARY_FLOORS = {
    "httpx": logging.WARNING,  # every request URL at INFO, and Bot API URLs hold the token
    "httpcore": logging.WARNING,
    "telegram": logging.INFO,  # whole updates (texts, names) at DEBUG
    "aiosqlite": logging.INFO,  # every statement with its parameters at DEBUG
    "apscheduler": logging.WARNING,  # two lines a second at INFO for the 1-second jobs (about 170,000 a day)
    "markdown_it": logging.INFO,  # a line per parsing rule tried, for every guide page, at DEBUG
}


def quiet_libraries(log_updates: bool | None = None) -> None:
    """Keep the loggers of ``LIBRARY_FLOORS`` at their floor whatever ``LOG_LEVEL`` says; ``LOG_UPDATES=1``
    (the argument, else the environment) lets python-telegram-bot log updates for a debugging session."""
    if log_updates is None:
        log_updates = os.environ.get("LOG_UPDATES", "").strip().lower() in ("1", "true", "yes")
    for name, floor in LIBRARY_FLOORS.items():
        logger = logging.getLogger(name)
        if name == "telegram" and log_updates:
            logger.setLevel(logging.NOTSET)
            continue
        if logger.level < floor:  # unset (NOTSET) or below the floor
            logger.setLevel(floor)


def redact(*secrets: str) -> None:
    """Never print these (the bot token, the webhook secret) in a log line."""
    _secrets.update(s for s in secrets if s)


def _redacted(text: str) -> str:
    for secret in _secrets:
        text = text.replace(secret, "<token>")
    return text


class UpdateFields(logging.Filter):
    """Adds ``update_id``, ``user`` (a pseudonym), ``chat_type`` and ``update_type`` to records written while
    an update is being handled."""

    def filter(self, record: logging.LogRecord) -> bool:
        trace = CURRENT.get()
        if trace is not None:
            record.update_id = trace.update_id
            record.user = pseudonym(trace.user_id)
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


def record_outcome(kind: str, outcome: str) -> None:
    """The update being handled was answered with ``kind`` and ``outcome`` (its "handled" line says so)."""
    trace = CURRENT.get()
    if trace is not None:
        trace.kind, trace.outcome = kind, outcome
