"""The language buttons' contract, in one place: their data, pattern and parser (the chooser's buttons, and the
switch under the greeting and under each guide page). ``bot.handlers.language`` answers them; the greeting and the
lesson, which the answer sends again, put the switch under their messages, so the contract sits below all three.

Button data: ``lang:<language>`` (the chooser: it turns into the confirmation), ``lang:<language>:start`` (the
greeting is rewritten in place), ``lang:<language>:guide:<slug>`` (that guide is sent again in that language;
``lang:<language>:guide``, from before there were several guides: the default one).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from telegram import InlineKeyboardButton, InlineKeyboardMarkup

from bot.text.render import LANGUAGES, Renderer

PATTERN = r"\Alang:(english|hinglish)(:(start|guide(:[a-z0-9][a-z0-9_-]{0,31})?))?\Z"


@dataclass(frozen=True)
class LanguagePress:
    language: str
    place: str  # "chooser", "start" or "guide"
    slug: str | None = None  # the guide's, when place is "guide" (None: the default guide)


def parse(data: str | None) -> LanguagePress | None:
    """A language button's data, or None if it is not one."""
    if not re.fullmatch(PATTERN, data or ""):
        return None
    _, language, *where = (data or "").split(":")
    return LanguagePress(language, where[0] if where else "chooser", where[1] if len(where) > 1 else None)


def switch_language_button(renderer: Renderer, where: str) -> InlineKeyboardButton:
    """The button that switches to the other language, named in that language; ``where``: "start" (the greeting) or
    a lesson button's data ("guide:<slug>"), the place the answer goes back to."""
    other = "english" if renderer.language() == "hinglish" else "hinglish"
    return InlineKeyboardButton(
        renderer.text("button_switch_language", name=other), callback_data=f"lang:{other}:{where}"
    )


def chooser_keyboard(renderer: Renderer) -> InlineKeyboardMarkup:
    """Both languages, the one in use ticked."""
    current = renderer.language()
    return InlineKeyboardMarkup(
        [
            [
                InlineKeyboardButton(
                    ("✓ " if language == current else "") + renderer.text("button_language", name=language),
                    callback_data=f"lang:{language}",
                )
                for language in LANGUAGES
            ]
        ]
    )
