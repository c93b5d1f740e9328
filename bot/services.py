"""What every handler needs, built once at start-up, and the typed ``bot_data`` that carries it to them.

Handlers are typed with :data:`Context`: ``context.bot_data`` is a :class:`BotData` (``ContextTypes(bot_data=
BotData)``), so ``context.bot_data.services`` is a :class:`BotServices`, not a value fetched from a dict by key.
"""

from __future__ import annotations

import asyncio
import logging
import re
import secrets
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

from telegram.ext import CallbackContext, ContextTypes, ExtBot

from bot.comment_replies import CommentReplies
from bot.compare import Lineup
from bot.languages import Languages
from bot.limits import UserGate
from bot.metrics import BotMetrics
from bot.rate_limits import Starts
from bot.render import Renderer
from bot.settings import BotSettings
from bot.storage import Repository
from bot.storage.repository import InteractionEntry, Write
from bot.storage.writer import InteractionWriter
from bot.tracking import record_outcome
from models.client import FillMaskService
from models.engine import MASK_ALIASES

log = logging.getLogger(__name__)


@dataclass
class BotServices:
    settings: BotSettings
    model: FillMaskService
    repo: Repository
    writer: InteractionWriter
    renderer: Renderer
    predict_gate: UserGate
    inline_gate: UserGate
    comment_replies: CommentReplies
    metrics: BotMetrics = field(default_factory=BotMetrics)
    # Comment claims made while the database could not answer: the once-per-post rule holds meanwhile.
    claims_in_memory: OrderedDict[tuple[str, int], None] = field(default_factory=OrderedDict)
    # Per user, the model call of their newest inline query (a newer query cancels the older one).
    inline_in_flight: dict[int, asyncio.Task] = field(default_factory=dict)
    # /compare's models, loaded on first use (bot.compare).
    lineup: Lineup | None = None
    # Sentences offered for tap-to-mask, by the short key in their buttons' data (the newest ones).
    tap_sentences: OrderedDict[str, str] = field(default_factory=OrderedDict)
    # The language each person chose (bot.languages); read from the repository unless given.
    languages: Languages | None = None
    # Predictions begun lately: in a burst "typing..." is skipped (bot.rate_limits).
    prediction_starts: Starts = field(default_factory=Starts)

    def __post_init__(self) -> None:
        if self.languages is None:
            self.languages = Languages(self.repo.users.chosen_language)

    def compare_lineup(self) -> Lineup:
        if self.lineup is None:
            self.lineup = Lineup(self.settings.compare_models, self.settings)
        return self.lineup

    def remember_sentence(self, text: str, *, keep: int = 10_000) -> str:
        """A short key for ``text`` that fits in a button's 64 bytes of data, whatever the text's length."""
        key = secrets.token_urlsafe(6)
        self.tap_sentences[key] = text
        while len(self.tap_sentences) > keep:
            self.tap_sentences.popitem(last=False)
        return key

    def tapped_sentence(self, key: str) -> str | None:
        return self.tap_sentences.get(key)

    @property
    def model_label(self) -> str:
        """The model's name as people know it: ``bert-base-uncased``, not a hub org or a local path."""
        return self.model.model_name.rstrip("/").rsplit("/", 1)[-1]

    @property
    def mask_pattern(self) -> re.Pattern[str]:
        """A mask in any spelling the engine accepts, or the model's own mask token (the engine's own rule)."""
        return re.compile(f"{MASK_ALIASES}|{re.escape(self.model.mask_token)}", re.IGNORECASE)

    def mask_spelling(self, text: str | None) -> str | None:
        """The first mask in ``text`` as the user wrote it (``[mask]``, ``<mask>`` ...), or None."""
        if not text:
            return None
        found = self.mask_pattern.search(text)
        return found.group() if found else None

    def has_mask(self, text: str | None) -> bool:
        """A mask in any spelling the engine accepts, or the model's own mask token."""
        return self.mask_spelling(text) is not None

    async def log(self, entry: InteractionEntry | Write) -> None:
        """Hand an interaction (or other bookkeeping) to the background writer: the reply never waits for the
        database, and a database that is locked or away only delays the write."""
        if isinstance(entry, InteractionEntry):
            self.metrics.replies.labels(entry.kind, entry.outcome).inc()
            record_outcome(entry.kind, entry.outcome)
        try:
            await self.writer.log(entry)
        except Exception:
            log.exception("could not hand a %s write to the writer", getattr(entry, "kind", type(entry).__name__))

    def claim_in_memory(self, post_key: str, user_id: int, *, keep: int = 100_000) -> bool:
        """The once-per-post rule without the database: True the first time in this process."""
        key = (post_key, user_id)
        if key in self.claims_in_memory:
            return False
        self.claims_in_memory[key] = None
        while len(self.claims_in_memory) > keep:
            self.claims_in_memory.popitem(last=False)
        return True


class BotData:
    """``application.bot_data``: PTB creates it with no arguments; ``bot.app`` attaches the services."""

    def __init__(self) -> None:
        self._services: BotServices | None = None
        # The channel post behind each discussion thread: (group id, thread root) -> (channel id, post id).
        self.posts: dict[tuple[int, int], tuple[int, int]] = {}
        # Callback queries already answered (the newest ones), so the error handler never answers twice.
        self.answered: OrderedDict[str, None] = OrderedDict()
        # Quizzes in progress, by the id of the poll waiting for an answer (bot.handlers.quiz).
        self.quizzes: OrderedDict[str, Any] = OrderedDict()

    def mark_answered(self, query_id: str, *, keep: int = 10_000) -> None:
        self.answered[query_id] = None
        while len(self.answered) > keep:
            self.answered.popitem(last=False)

    @property
    def services(self) -> BotServices:
        if self._services is None:
            raise RuntimeError("the bot's services are not attached (bot.app.build_application does that)")
        return self._services

    def attach(self, services: BotServices) -> None:
        self._services = services


Context = CallbackContext[ExtBot[None], dict, dict, BotData]
CONTEXT_TYPES = ContextTypes(bot_data=BotData)
