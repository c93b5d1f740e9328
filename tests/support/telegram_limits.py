"""How the real Telegram pushes back, for the fake Bot API: flood control per chat, and a network that misbehaves."""

from __future__ import annotations

import random
import time
from collections.abc import AsyncIterator

from tests.support.telegram_rules import ApiError


class ChatFloods:
    """Telegram's flood control per chat: a short burst, then about one message a second in a private chat and 20 a
    minute in a group; past that, 429 for that chat only (``floods`` lists the chats refused so). The bursts here are
    a little larger than the bot's own pacing, so jitter on a busy machine is not a flood. Refused messages are not
    counted (a leaky bucket)."""

    def __init__(self) -> None:
        self.enabled = True
        self.private_burst, self.private_per_s = 5.0, 1.0
        self.group_burst, self.group_per_s = 22.0, 20 / 60
        self.floods: list[int] = []
        self._levels: dict[int, tuple[float, float]] = {}  # chat id -> (bucket level, when last leaked)

    def spend(self, chat_id: int) -> None:
        """One message to ``chat_id``, or ApiError 429 when the chat is over its allowance."""
        if not self.enabled:
            return
        burst, rate = (self.private_burst, self.private_per_s) if chat_id > 0 else (self.group_burst, self.group_per_s)
        now = time.monotonic()
        level, last = self._levels.get(chat_id, (0.0, now))
        level = max(0.0, level - (now - last) * rate)
        if level + 1 > burst:
            self._levels[chat_id] = (level, now)
            self.floods.append(chat_id)
            wait = max(1, int((level + 1 - burst) / rate + 0.999))
            raise ApiError(429, f"Too Many Requests: retry after {wait}", retry_after=wait)
        self._levels[chat_id] = (level + 1, now)


class NetworkChaos:
    """A network that misbehaves, for sends, edits and answers: ``shares`` is the share of calls that get a 502, a
    connection dropped before the request is handled, and an answer held past the client's timeout (the request
    *was* handled). ``seen`` lists (method, "502" | "drop" | "timeout") of each trouble drawn."""

    def __init__(self) -> None:
        self.shares: tuple[float, float, float] | None = None
        self.hang_s = 6.0  # python-telegram-bot reads for 5 s
        self.seen: list[tuple[str, str]] = []
        self._rng = random.Random(20261204)

    def draw(self, method: str) -> str | None:
        if self.shares is None or not method.lower().startswith(("send", "edit", "answer")):
            return None
        draw, (bad_gateway, dropped, timed_out) = self._rng.random(), self.shares
        trouble = None
        if draw < bad_gateway:
            trouble = "502"
        elif draw < bad_gateway + dropped:
            trouble = "drop"
        elif draw < bad_gateway + dropped + timed_out:
            trouble = "timeout"
        if trouble:
            self.seen.append((method, trouble))
        return trouble


async def dropped_connection() -> AsyncIterator[bytes]:
    """A body that breaks off: the server closes the connection before any answer (a dropped connection)."""
    raise ConnectionResetError("the fake Bot API drops this connection")
    yield b""  # pragma: no cover - makes this a generator
