"""python-telegram-bot's HTTP layer, with Telegram's failures told apart and counted.

python-telegram-bot turns every 5xx into a plain ``NetworkError`` and, when the body is not JSON (a proxy's HTML
"502 Bad Gateway" page), logs a traceback of the parse before raising. The rate limiter (``bot.flood_control``)
decides whether a failed call is tried again, and that depends on what the failure says about the call:

* :class:`TelegramServerError`: Telegram answered 5xx, saying it did not do it (a 504 is the exception: the
  gateway gave up waiting, so the call may have been done);
* :class:`UnreadableAnswer`: an answer that is not JSON; with a 2xx, the call was done and its result is lost;
* python-telegram-bot's own ``NetworkError``/``TimedOut`` for a connection that was refused, dropped, or an answer
  that came too late (``__cause__`` is httpx's exception: ``bot.flood_control.never_sent`` reads it).

Every answer that is not 2xx, and every call that failed on the way, is counted for ``/metrics`` per attempt.
"""

from __future__ import annotations

import json
from http import HTTPStatus
from typing import Any

from telegram.error import NetworkError, TimedOut
from telegram.request import HTTPXRequest

from bot.http.metrics import BotMetrics

GATEWAY_TIMEOUT = 504
# How long a call (other than the long poll) waits for Telegram's answer (python-telegram-bot's default is 5 s).
# A send that gets no answer may have been delivered, and the rate limiter sends it again: a slow Telegram must
# not turn into copies.
READ_TIMEOUT_S = 15.0


class TelegramServerError(NetworkError):
    """Telegram (or the proxy in front of it) answered 5xx."""

    def __init__(self, code: int, description: str) -> None:
        super().__init__(f"{description} ({code})")
        self.code = code

    @property
    def may_have_been_done(self) -> bool:
        return self.code == GATEWAY_TIMEOUT


class UnreadableAnswer(NetworkError):
    """Telegram's answer is not JSON (a proxy's error page, a body cut short)."""


class TelegramRequest(HTTPXRequest):
    def __init__(self, metrics: BotMetrics, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._errors = metrics.telegram_errors

    async def do_request(self, url: str, method: str, *args: Any, **kwargs: Any) -> tuple[int, bytes]:
        api_method = url.rsplit("/", 1)[-1]  # the URL holds the token; only its last part is a label
        try:
            code, payload = await super().do_request(url, method, *args, **kwargs)
        except TimedOut:
            self._errors.labels(api_method, "timeout").inc()
            raise
        except Exception:
            self._errors.labels(api_method, "network").inc()
            raise
        if code >= 300:
            self._errors.labels(api_method, str(code)).inc()
        if code >= 500:
            raise TelegramServerError(code, _description(code, payload))
        return code, payload

    @staticmethod
    def parse_json_payload(payload: bytes) -> dict[str, Any]:
        """As python-telegram-bot's, without its traceback in the log: a body that is not JSON is a failure of the
        call like any other, told by one line where it is handled."""
        try:
            data = json.loads(payload.decode("utf-8", "replace"))
        except ValueError:
            raise UnreadableAnswer(f"an answer that is not JSON ({len(payload)} bytes)") from None
        if not isinstance(data, dict):
            raise UnreadableAnswer("an answer that is not a JSON object")
        return data


def _description(code: int, payload: bytes) -> str:
    """Telegram's own description of a 5xx, or the status's name (never the body of an HTML page)."""
    try:
        description = json.loads(payload.decode("utf-8", "replace")).get("description")
    except (ValueError, AttributeError):
        description = None
    if isinstance(description, str) and description:
        return description[:200]
    try:
        return HTTPStatus(code).phrase
    except ValueError:
        return "Server error"
