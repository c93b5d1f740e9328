"""What every handler needs, built once at start-up and kept in ``application.bot_data``."""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass

from telegram.ext import CallbackContext

from bot.comment_replies import CommentReplies
from bot.limits import UserGate
from bot.render import Renderer
from bot.settings import BotSettings
from bot.storage import Repository
from bot.storage.repository import InteractionEntry
from bot.storage.writer import InteractionWriter
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

    @property
    def model_label(self) -> str:
        """The model's name as people know it: ``bert-base-uncased``, not a hub org or a local path."""
        return self.model.model_name.rstrip("/").rsplit("/", 1)[-1]

    def mask_spelling(self, text: str | None) -> str | None:
        """The first mask in ``text`` as the user wrote it (``[mask]``, ``<mask>`` ...), or None."""
        if not text:
            return None
        found = re.search(f"{MASK_ALIASES}|{re.escape(self.model.mask_token)}", text, re.IGNORECASE)
        return found.group() if found else None

    def has_mask(self, text: str | None) -> bool:
        """A mask in any spelling the engine accepts, or the model's own mask token."""
        return self.mask_spelling(text) is not None

    async def log(self, entry: InteractionEntry) -> None:
        """Hand an interaction to the background writer: the reply never waits for the database."""
        try:
            await self.writer.log(entry)
        except Exception:
            log.exception("could not log a %s interaction", entry.kind)


def services(context: CallbackContext) -> BotServices:
    return context.application.bot_data["services"]
