"""How the real Telegram pushes back, for the fake Bot API: flood control per chat, and a network that misbehaves."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable

from starlette.responses import JSONResponse, Response, StreamingResponse

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


NGINX_502 = b"""<html>
<head><title>502 Bad Gateway</title></head>
<body>
<center><h1>502 Bad Gateway</h1></center>
<hr><center>nginx/1.18.0</center>
</body>
</html>
"""
TROUBLES = ("502", "502-html", "drop", "timeout", "slow")


class NetworkChaos:
    """A network that misbehaves, for sends, edits and answers: ``shares`` maps each trouble to the share of calls
    that get it: "502" (Telegram's JSON body), "502-html" (the HTML page of the proxy in front of it), "drop" (the
    connection closed before the request is handled), "timeout" (the request *is* handled, the answer comes past
    the client's timeout) and "slow" (handled, answered late but in time). ``seen`` lists (method, trouble) of
    each trouble drawn."""

    def __init__(self) -> None:
        self.shares: dict[str, float] | None = None
        self.hang_s = 6.0  # python-telegram-bot reads for 5 s
        self.slow_s = 2.0
        self.seen: list[tuple[str, str]] = []
        self._rng = random.Random(20261204)

    def draw(self, method: str) -> str | None:
        if not self.shares or not method.lower().startswith(("send", "edit", "answer")):
            return None
        draw, edge = self._rng.random(), 0.0
        for trouble in TROUBLES:
            edge += self.shares.get(trouble, 0.0)
            if draw < edge:
                self.seen.append((method, trouble))
                return trouble
        return None

    async def respond(self, trouble: str, answer: Callable[[], Awaitable[Response]]) -> Response:
        """The fake's answer to a call that drew ``trouble``; ``answer`` handles the call for real."""
        if trouble == "502":
            return JSONResponse({"ok": False, "error_code": 502, "description": "Bad Gateway"}, status_code=502)
        if trouble == "502-html":
            return Response(NGINX_502, status_code=502, media_type="text/html")
        if trouble == "drop":
            return StreamingResponse(dropped_connection(), media_type="application/json")
        handled = await answer()
        await asyncio.sleep(self.hang_s if trouble == "timeout" else self.slow_s)
        return handled


async def dropped_connection() -> AsyncIterator[bytes]:
    """A body that breaks off: the server closes the connection before any answer (a dropped connection)."""
    raise ConnectionResetError("the fake Bot API drops this connection")
    yield b""  # pragma: no cover - makes this a generator
