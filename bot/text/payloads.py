"""Deep-link payloads (``t.me/<bot>?start=<payload>``): what the bot hands out, and reading them back.

Telegram allows up to 64 characters of ``A-Za-z0-9_-``; anything else a user crafts is treated as no payload.

* ``mlm`` (also ``guide``, ``inline``): the default guide;
* ``g_<slug>``: that guide;
* ``p<chat>_<thread>`` or ``p<chat>_<thread>_<slug>``: someone commented under that post (the discussion thread)
  asking for that guide (the default one without a slug). At most 1 + 17 + 1 + 12 + 1 + 32 = 64 characters.

A slug that names no guide (any more) is the handlers' business: they send the default guide.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

GUIDE = "mlm"
_VALID = re.compile(r"[A-Za-z0-9_-]{1,64}")
_SLUG = r"[a-z0-9][a-z0-9_-]{0,31}"
_GUIDE = re.compile(rf"g_({_SLUG})")
_POST = re.compile(rf"p(-?\d{{1,16}})_(\d{{1,12}})(?:_({_SLUG}))?")


@dataclass(frozen=True)
class Payload:
    kind: str  # "guide" or "post"
    chat_id: int | None = None
    message_id: int | None = None
    guide: str | None = None  # the guide's slug; None: the default guide

    @property
    def post_key(self) -> str | None:
        return f"{self.chat_id}:{self.message_id}" if self.kind == "post" else None


def guide_payload(slug: str | None = None) -> str:
    return f"g_{slug}" if slug else GUIDE


def post_payload(chat_id: int, message_id: int, slug: str | None = None) -> str:
    """Ties a "get the guide" button to the channel post (or discussion thread) it was given under."""
    return f"p{chat_id}_{message_id}" + (f"_{slug}" if slug else "")


def parse_payload(raw: str | None) -> Payload | None:
    if not raw or not _VALID.fullmatch(raw):
        return None
    if raw.lower() in (GUIDE, "guide", "inline"):  # inline: the "How to use me" button of inline mode
        return Payload("guide")
    match = _GUIDE.fullmatch(raw)
    if match:
        return Payload("guide", guide=match.group(1))
    match = _POST.fullmatch(raw)
    if match:
        return Payload("post", int(match.group(1)), int(match.group(2)), match.group(3))
    return None
