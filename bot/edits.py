"""Edits of the bot's own messages by its buttons: one press at a time per message, and never the same content twice.

A person who taps a button again before the first tap's edit has gone out (their chat is paced to about a message
a second, the model may be busy) makes presses that all carry the message as it was; each computes the same new
text, and Telegram refuses every edit after the first ("message is not modified", a 400 that still spends the
chat's allowance). Here each message's edits wait for one another, and this process remembers a digest of what it
last put in each message (never the text: an answer holds the person's sentence), so the later presses send
nothing. A press on another replica can still race one here: Telegram's refusal is then caught and ignored.
"""

from __future__ import annotations

import asyncio
import hashlib
import weakref

from cachetools import LRUCache
from telegram import InlineKeyboardMarkup, Message
from telegram.error import BadRequest

# Messages remembered (the least recently edited go first): a digest and two ids each, 273 bytes measured
# (20,000: 5.5 MB).
EDITS_KEPT = 20_000


class MessageEdits:
    def __init__(self, kept: int = EDITS_KEPT) -> None:
        self._last: LRUCache[tuple[int, int], bytes] = LRUCache(kept)
        # A lock per message while presses of it are under way; it goes when the last of them is done.
        self._locks: weakref.WeakValueDictionary[tuple[int, int], asyncio.Lock] = weakref.WeakValueDictionary()

    async def edit(self, message: Message, html: str, keyboard: InlineKeyboardMarkup | None) -> bool:
        """Put ``html`` and ``keyboard`` in ``message`` unless they are there already; True when an edit went out."""
        key = (message.chat_id, message.message_id)
        content = repr((html, keyboard.to_dict() if keyboard else None)).encode()
        digest = hashlib.blake2b(content, digest_size=16).digest()
        lock = self._locks.get(key)
        if lock is None:
            lock = self._locks[key] = asyncio.Lock()
        async with lock:
            if self._last.get(key) == digest:
                return False
            try:
                await message.edit_text(html, reply_markup=keyboard)
            except BadRequest as exc:
                if "not modified" not in exc.message.lower():
                    raise
                # Another replica (or Telegram's own copy) had it already: it is there all the same.
            self._last[key] = digest
            return True

    def forget(self, chat_id: int) -> None:
        """What this process remembers of one private chat's messages (/forget)."""
        for key in [k for k in self._last if k[0] == chat_id]:
            del self._last[key]
