"""Deep-link payloads (``t.me/<bot>?start=<payload>``): what the bot hands out, and reading them back.

Telegram allows up to 64 characters of ``A-Za-z0-9_-``; anything else a user crafts is treated as no payload.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

GUIDE = "mlm"
_VALID = re.compile(r"[A-Za-z0-9_-]{1,64}")
_POST = re.compile(r"p(-?\d{1,20})_(\d{1,12})")


@dataclass(frozen=True)
class Payload:
    kind: str  # "guide" or "post"
    chat_id: int | None = None
    message_id: int | None = None

    @property
    def post_key(self) -> str | None:
        return f"{self.chat_id}:{self.message_id}" if self.kind == "post" else None


def guide_payload() -> str:
    return GUIDE


def post_payload(chat_id: int, message_id: int) -> str:
    """Ties a "get the guide" button to the channel post (or discussion thread) it was given under."""
    return f"p{chat_id}_{message_id}"


def parse_payload(raw: str | None) -> Payload | None:
    if not raw or not _VALID.fullmatch(raw):
        return None
    if raw.lower() in (GUIDE, "guide", "inline"):  # inline: the "How to use me" button of inline mode
        return Payload("guide")
    match = _POST.fullmatch(raw)
    if match:
        return Payload("post", int(match.group(1)), int(match.group(2)))
    return None
