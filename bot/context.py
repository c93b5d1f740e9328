"""The typed ``bot_data`` handlers get: ``context.bot_data`` is a :class:`BotData` (python-telegram-bot creates it
through ``ContextTypes(bot_data=BotData)``), whose ``services`` is the :class:`~bot.services.BotServices` built at
start-up, plus what the bot keeps per conversation (posts behind discussion threads, answered button presses,
quizzes in progress), each a capped cache. Handlers are typed with :data:`Context`.
"""

from __future__ import annotations

from typing import Any

from cachetools import LRUCache, TTLCache
from telegram.ext import CallbackContext, ContextTypes, ExtBot

from bot.services import BotServices

# How many entries each in-memory map keeps at most (the least recently used go first).
POSTS_KEPT = 100_000
ANSWERED_KEPT = 10_000
QUIZZES_KEPT = 10_000


class BotData:
    """``application.bot_data``: PTB creates it with no arguments; ``bot.app`` attaches the services."""

    def __init__(self) -> None:
        self._services: BotServices | None = None
        # The channel post behind each discussion thread: (group id, thread root) -> (channel id, post id).
        self.posts: LRUCache[tuple[int, int], tuple[int, int]] = LRUCache(POSTS_KEPT)
        # Callback queries already answered (the newest ones), so the error handler never answers twice. Telegram
        # takes an answer for about 15 s only: an hour is plenty.
        self.answered: TTLCache[str, None] = TTLCache(ANSWERED_KEPT, ttl=3600)
        # Quizzes in progress, by the id of the poll waiting for an answer (bot.handlers.quiz); a day to answer.
        self.quizzes: TTLCache[str, Any] = TTLCache(QUIZZES_KEPT, ttl=86_400)

    def mark_answered(self, query_id: str) -> None:
        self.answered[query_id] = None

    def forget_person(self, user_id: int) -> None:
        """/forget: their quiz in progress, and everything the services hold about them."""
        for poll_id in [p for p, run in self.quizzes.items() if getattr(run, "user_id", None) == user_id]:
            del self.quizzes[poll_id]
        self.services.forget_person(user_id)

    @property
    def services(self) -> BotServices:
        if self._services is None:
            raise RuntimeError("the bot's services are not attached (bot.app.build_application does that)")
        return self._services

    def attach(self, services: BotServices) -> None:
        self._services = services


Context = CallbackContext[ExtBot[None], dict, dict, BotData]
CONTEXT_TYPES = ContextTypes(bot_data=BotData)
