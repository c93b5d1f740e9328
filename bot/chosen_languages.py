"""Which language each person reads the bot in, English or Hinglish: their choice (``/language`` or a language
button), kept in the database (``users.chosen_language``) and, for the people seen lately, in memory.

Telegram's ``language_code`` cannot tell Hinglish from English (an Indian student's app is in English either
way), so it is a choice, never a guess; until one is made, the bot's ``DEFAULT_LANGUAGE``.

Knowing the choice never holds up a reply: the people seen lately cost a dictionary lookup; anyone else costs
one database read with a short timeout, and a database that is slow or away means the default for this update
(not remembered, so the next update asks again).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from cachetools import LRUCache

from bot.text.render import LANGUAGES

log = logging.getLogger(__name__)

# What people type after /language, and the language it means.
ALIASES = {
    "english": "english",
    "en": "english",
    "eng": "english",
    "hinglish": "hinglish",
    "hindi": "hinglish",  # Hindi in Roman letters is what the bot writes
    "hi": "hinglish",
}


def parse_language(text: str | None) -> str | None:
    """``"Hinglish"``, ``" en "`` -> the language; None if it is not one the bot speaks."""
    if not text:
        return None
    return ALIASES.get(text.strip().lower().strip(".!"))


class Languages:
    """The languages people chose: ``await of(user_id)`` (None: never chose), ``remember`` after a choice (the
    database write goes through the background writer), ``forget`` after /forget."""

    def __init__(
        self, read: Callable[[int], Awaitable[str | None]], *, keep: int = 50_000, timeout: float = 0.5
    ) -> None:
        self._read = read
        self._known: LRUCache[int, str | None] = LRUCache(keep)  # the people seen lately
        self._changes = 0  # choices made or forgotten: a read that started before one may be stale
        self.keep = keep
        self.timeout = timeout

    async def of(self, user_id: int | None) -> str | None:
        if user_id is None:
            return None
        if user_id in self._known:
            return self._known[user_id]
        changes = self._changes
        try:
            chosen = await asyncio.wait_for(self._read(user_id), self.timeout)
        except Exception as exc:  # slow, locked or away: the default this time, asked again next time
            log.warning("could not read a language choice now (%s): using the default", type(exc).__name__)
            return None
        if chosen not in LANGUAGES:
            chosen = None
        if self._changes != changes:
            # Someone chose (or forgot) meanwhile, perhaps this person, in an update handled at the same time
            # ("/start" then "/language hinglish"): what memory holds now is newer than this read.
            return self._known.get(user_id, chosen)
        self._store(user_id, chosen)
        return chosen

    def remember(self, user_id: int, language: str) -> None:
        self._changes += 1
        self._store(user_id, language)

    def forget(self, user_id: int) -> None:
        self._changes += 1
        self._known.pop(user_id, None)

    def _store(self, user_id: int, language: str | None) -> None:
        self._known[user_id] = language

    def __len__(self) -> int:
        return len(self._known)
