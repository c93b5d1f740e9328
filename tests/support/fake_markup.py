"""``editMessageReplyMarkup`` as Telegram answers it (a message's buttons changed in place), mixed into the fake
Bot API: the message must exist, the keyboard must be valid, and the same keyboard again is "not modified"."""

from __future__ import annotations

from typing import Any

from tests.support.telegram_rules import ApiError, check_markup


class MarkupEdits:
    _messages: dict[tuple[int, int], dict[str, Any]]

    async def api_editmessagereplymarkup(self, params: dict[str, Any]) -> dict[str, Any]:
        chat_id = int(params["chat_id"])
        stored = self._messages.get((chat_id, int(params["message_id"])))
        if stored is None:
            raise ApiError(400, "Bad Request: message to edit not found")
        check_markup(params.get("reply_markup"), chat_id)
        if stored.get("reply_markup") == params.get("reply_markup"):
            raise ApiError(400, "Bad Request: message is not modified")
        self.flood.spend(chat_id)  # type: ignore[attr-defined]
        stored["reply_markup"] = params.get("reply_markup")
        return stored
