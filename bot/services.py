"""What every handler needs, built once at start-up: :class:`BotServices` (``bot.context`` carries it to the
handlers as ``context.bot_data.services``, typed).

Whatever is kept in memory per person, chat, post, query or sentence is a ``cachetools`` cache with a size cap
(and an expiry where old entries are worthless): strangers choose those keys, and memory must not grow with
them. ``BotData.forget_person`` drops one person's entries from every one of them (/forget).
"""

from __future__ import annotations

import asyncio
import logging
import re
import secrets
from dataclasses import dataclass, field

from cachetools import LRUCache

from bot.budgets import ActionBudget, ModelCallLimit
from bot.channel_gate import ChannelGate
from bot.chosen_languages import Languages
from bot.compare_models import ComparedModels
from bot.config import BotSettings, GuideSettings
from bot.edits import MessageEdits
from bot.flood_control import PredictionStarts
from bot.guides import GuideLibrary, load_library, page_environment
from bot.http.metrics import BotMetrics
from bot.logs import record_outcome, update_began_at
from bot.public_replies import CommentReplies
from bot.storage import Repository
from bot.storage.writer import InteractionWriter
from bot.storage.writes import InteractionEntry, TapSentenceKept, Write
from bot.text.render import Renderer
from models.engine.core import MASK_ALIASES
from models.serving.client import FillMaskService

log = logging.getLogger(__name__)


def load_guides(settings: GuideSettings, renderer: Renderer) -> GuideLibrary:
    """The shipped guides and GUIDES_DIR's, each page rendered and checked (GuideProblems on any problem)."""
    return load_library(
        settings.guides_folder(),
        environment=page_environment(renderer.template_loader, renderer.template_globals),
        default_keywords=settings.trigger_keywords,
    )


# How many entries each in-memory map keeps at most (the least recently used go first).
CLAIMS_KEPT = 100_000
# Tap-to-mask sentences are texts of up to 4,096 characters: their cache is capped by characters, not entries (a
# cap of 10,000 entries was up to 160 MB of text). Past it, a tap finds its sentence in the database instead.
TAP_SENTENCES_CHARS = 2_000_000


@dataclass
class BotServices:
    settings: BotSettings
    model: FillMaskService
    repo: Repository
    writer: InteractionWriter
    renderer: Renderer
    predict_limit: ModelCallLimit
    inline_limit: ModelCallLimit
    comment_replies: CommentReplies
    # Everything a person asks, one budget (bot.handlers.admission); the gates above limit model calls on top.
    budget: ActionBudget = field(default_factory=lambda: ActionBudget(20, 4))
    metrics: BotMetrics = field(default_factory=BotMetrics)
    # Comment claims made while the database could not answer: the once-per-post rule holds meanwhile.
    claims_in_memory: LRUCache[tuple[str, int], None] = field(default_factory=lambda: LRUCache(CLAIMS_KEPT))
    # Per user, the model call of their newest inline query (a newer query cancels the older one); an entry
    # leaves when its call ends, so this holds at most the calls running at once.
    inline_in_flight: dict[int, asyncio.Task] = field(default_factory=dict)
    # /compare's models, loaded on first use (bot.compare_models).
    compared: ComparedModels | None = None
    # Sentences offered for tap-to-mask, by the short key in their buttons' data: (whose, the text), the newest.
    tap_sentences: LRUCache[str, tuple[int | None, str]] = field(
        default_factory=lambda: LRUCache(TAP_SENTENCES_CHARS, getsizeof=lambda kept: 100 + len(kept[1]))
    )
    # The language each person chose (bot.chosen_languages); read from the repository unless given.
    languages: Languages | None = None
    # Predictions begun lately: in a burst "typing..." is skipped (bot.flood_control).
    prediction_starts: PredictionStarts = field(default_factory=PredictionStarts)
    # The tasks handling an update right now (bot.updates.tracking): cancelled if another process takes over.
    handling: set[asyncio.Task] = field(default_factory=set)
    # The guides (bot.guides): loaded from the settings unless given; replaced whole by reload_guides().
    guides: GuideLibrary = None  # type: ignore[assignment]
    # The follow-gate (REQUIRE_CHANNEL): who is a member of the creator's channel, kept a few minutes.
    channel_gate: ChannelGate = None  # type: ignore[assignment]
    # What the buttons last put in each message (bot.edits): a second press never edits in the same text again.
    edits: MessageEdits = field(default_factory=MessageEdits)

    def __post_init__(self) -> None:
        if self.guides is None:
            self.guides = load_guides(self.settings, self.renderer)
        if self.channel_gate is None:
            self.channel_gate = ChannelGate(getattr(self.settings, "require_channel", None))
        self.comment_replies.guide_name = self.guide_name
        if self.languages is None:
            self.languages = Languages(self.repo.users.chosen_language)

    def compared_models(self) -> ComparedModels:
        if self.compared is None:
            s = self.settings
            self.compared = ComparedModels(s.compare_models, s, memory_mb=s.compare_memory_mb, main=self.model)
        return self.compared

    def remember_sentence(self, text: str, user_id: int | None = None) -> str:
        """A short key for ``text`` that fits in a button's 64 bytes of data, whatever the text's length (kept in
        memory now; :meth:`keep_sentence` writes the database's copy once the buttons are out)."""
        key = secrets.token_urlsafe(6)
        self.tap_sentences[key] = (user_id, text)
        return key

    async def keep_sentence(self, key: str) -> None:
        """The database's copy of a remembered sentence (through the writer), so a tap works after a restart and
        on another process. Called after the reply: the reply never waits for the database."""
        kept = self.tap_sentences.get(key)
        if kept is not None:
            await self.log(TapSentenceKept(key, kept[0], kept[1], update_began_at()))

    async def tapped_sentence(self, key: str) -> str | None:
        kept = self.tap_sentences.get(key)
        if kept is not None:
            return kept[1]
        try:
            row = await self.repo.state.tap_sentence(key)
        except Exception as exc:  # the database away: the tap is answered as expired, not as an error
            log.warning("could not look up a tap sentence (%s)", type(exc).__name__)
            return None
        return row.text if row is not None else None

    def forget_person(self, user_id: int) -> None:
        """Everything this process holds about one person (/forget): their tap sentences, comment claims,
        public replies still waiting, language, limits, their channel membership, what the buttons last put in
        their private chat's messages, and their inline query's model call."""
        for key in [k for k, (owner, _) in self.tap_sentences.items() if owner == user_id]:
            del self.tap_sentences[key]
        for claim in [c for c in self.claims_in_memory if c[1] == user_id]:
            del self.claims_in_memory[claim]
        task = self.inline_in_flight.pop(user_id, None)
        if task is not None:
            task.cancel()
        self.comment_replies.forget(user_id)
        self.languages.forget(user_id)
        self.predict_limit.forget(user_id)
        self.inline_limit.forget(user_id)
        self.budget.forget(user_id)
        self.channel_gate.forget(user_id)
        self.edits.forget(user_id)  # a person's private chat has their user id

    def guide_name(self, slug: str, language: str) -> str:
        """A guide's short name ("your MLM guide is ready"); the default guide's for a slug gone since."""
        return (self.guides.get(slug) or self.guides.default).name_in(language)

    async def reload_guides(self) -> GuideLibrary:
        """Read the guides again (``/reload``, SIGHUP); all or nothing: on a problem the old ones stay and
        GuideProblems says why. Rendering every page to check it is CPU work: in a thread."""
        self.guides = await asyncio.to_thread(load_guides, self.settings, self.renderer)
        log.info("guides reloaded: %s", ", ".join(f"{g.slug} ({g.page_count} pages)" for g in self.guides.guides))
        return self.guides

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

    def claim_in_memory(self, post_key: str, user_id: int) -> bool:
        """The once-per-post rule without the database: True the first time in this process."""
        key = (post_key, user_id)
        if key in self.claims_in_memory:
            return False
        self.claims_in_memory[key] = None
        return True
