"""Everything the bot says comes from ``templates/`` (Jinja2); this module turns templates into messages.

* ``messages/*.html``: Telegram HTML, autoescaped, so user text echoed into them is always escaped;
* ``strings.txt``: plain-text macros (button labels, inline titles, command descriptions), not escaped,
  because Telegram shows those fields verbatim;
* ``facts.j2``: the MLM guide's figures and code, shared by every language, its pages and the quiz;
* ``guides/``: the guides themselves, Markdown pages (``bot.guides`` reads them, with this module's loaders).

**Languages.** English is the top folder; ``hinglish/`` holds the same files in Hinglish and is read first when
a person chose Hinglish (``/language``), so a file missing there falls back to English (a test makes sure none
is missing from what ships). Which language a message is in comes from the ``language`` argument, else from
:data:`REPLY_LANGUAGE` (set for each update to the person's choice), else the bot's default: handlers need not
pass it around.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from contextvars import ContextVar
from pathlib import Path
from typing import Any

import jinja2

from bot.text.telegram_html import visible_text

# What error.html and the inline refusal may say about an error, from its details.
ERROR_FIELDS = ("count", "limit", "retry_after")


LANGUAGES = ("english", "hinglish")
DEFAULT_LANGUAGE = "english"

# The language of what the bot says while it handles one update: the person's choice (bot.chosen_languages sets it).
REPLY_LANGUAGE: ContextVar[str | None] = ContextVar("reply_language", default=None)


def _loader(language: str, templates_dir: Path | None = None) -> jinja2.BaseLoader:
    """The templates shipped with the package, under a folder of your own wording (``templates_dir``, else
    ``MLM_BOT_TEMPLATES``) that needs only the files you changed; for a language other than English, its
    subfolder first, then the English files (yours, then the package's)."""
    folder = templates_dir if templates_dir is not None else os.environ.get("MLM_BOT_TEMPLATES")
    loaders: list[jinja2.BaseLoader] = []
    if folder:
        if language != "english":
            loaders.append(jinja2.FileSystemLoader(str(Path(folder) / language)))
        loaders.append(jinja2.FileSystemLoader(str(folder)))
    if language != "english":
        loaders.append(jinja2.PackageLoader("templates", language))
    loaders.append(jinja2.PackageLoader("templates", "."))
    return loaders[0] if len(loaders) == 1 else jinja2.ChoiceLoader(loaders)


GENDERS = ("male", "female")


class _Language:
    """The Jinja environments of one language: HTML (autoescaped) and plain text. ``g(male, female)`` picks the
    bot's own word forms by the creator's gender (Hinglish verbs agree with the speaker: "bhejunga"/"bhejungi")."""

    def __init__(self, loader: jinja2.BaseLoader, creator_gender: str = "male") -> None:
        common = {"loader": loader, "undefined": jinja2.StrictUndefined, "trim_blocks": True, "lstrip_blocks": True}
        self.html = jinja2.Environment(autoescape=True, **common)
        self.plain = jinja2.Environment(autoescape=False, keep_trailing_newline=False, **common)
        female = creator_gender == "female"
        for env in (self.html, self.plain):
            env.globals["g"] = lambda male_form, female_form: female_form if female else male_form
        self.html.filters["percent"] = percent
        self.html.filters["bar"] = _bar
        self.html.filters["shorten"] = shorten
        self.strings = self.plain.get_template("strings.txt").module

    def module(self, name: str) -> Any:
        return self.plain.get_template(name).module


class Renderer:
    def __init__(
        self,
        templates_dir: Path | None = None,
        *,
        default_language: str = DEFAULT_LANGUAGE,
        creator_gender: str = "male",
    ) -> None:
        if default_language not in LANGUAGES:
            raise ValueError(f"unknown language {default_language!r}: one of {', '.join(LANGUAGES)}")
        if creator_gender not in GENDERS:
            raise ValueError(f"unknown creator gender {creator_gender!r}: one of {', '.join(GENDERS)}")
        self.default_language = default_language
        self._languages = {
            language: _Language(_loader(language, templates_dir), creator_gender) for language in LANGUAGES
        }

    def template_loader(self, language: str) -> jinja2.BaseLoader:
        """Where this language's templates come from (a guide page may import them)."""
        loader = self._languages[language].plain.loader
        assert loader is not None
        return loader

    def template_globals(self, language: str) -> dict[str, Any]:
        """What every guide page may use besides its own context: ``facts`` and ``g`` (the creator's word forms)."""
        env = self._languages[language]
        return {"facts": env.module("facts.j2"), "g": env.plain.globals["g"]}

    def language(self, language: str | None = None) -> str:
        """The language a message is in: the one asked for, else the current update's person's, else the default."""
        chosen = language or REPLY_LANGUAGE.get()
        return chosen if chosen in self._languages else self.default_language

    def _env(self, language: str | None) -> _Language:
        return self._languages[self.language(language)]

    def html(self, name: str, *, language: str | None = None, **context: Any) -> str:
        """One Telegram HTML message from ``messages/<name>.html``."""
        return self._env(language).html.get_template(f"messages/{name}.html").render(**context).strip()

    def page(self, name: str, *, language: str | None = None, **context: Any) -> str:
        """A web page from ``web/<name>.html`` (the playground), with the language's strings as ``t``."""
        env = self._env(language)
        return env.html.get_template(f"web/{name}.html").render(
            t=env.strings, language=self.language(language), **context
        )

    def error(
        self, code: str, details: Mapping[str, Any] | None = None, *, plain: bool = False, language: str | None = None
    ) -> str:
        """The one path from an error code and its details (a mask count and limit, seconds to wait) to words:
        ``messages/error.html`` as a message, or as plain text of at most 200 characters (a callback answer)."""
        fields = {name: (details or {}).get(name) for name in ERROR_FIELDS}
        fields["retry_after"] = fields["retry_after"] or 0
        html = self.html("error", language=language, code=code, **fields)
        return visible_text(html)[:200] if plain else html

    def inline_refusal(self, code: str, details: Mapping[str, Any] | None = None) -> str:
        """The same, as the text of the button above inline results (at most 64 characters)."""
        fields = {name: (details or {}).get(name) for name in ERROR_FIELDS}
        fields["retry_after"] = fields["retry_after"] or 0
        return self.text("inline_refusal", code=code, **fields).strip()[:64]

    def text(self, macro: str, *, language: str | None = None, **context: Any) -> str:
        """A plain-text string (a button label, a title) from a macro in ``strings.txt``."""
        return str(getattr(self._env(language).strings, macro)(**context)).strip()

    def quiz(self, language: str | None = None) -> list[dict[str, Any]]:
        """The quiz's questions (question, options, correct, explanation), from ``quiz.j2``."""
        return list(self._env(language).module("quiz.j2").questions)

    def experiments(self) -> list[tuple[str, str]]:
        """(button label, sentence) of the ready sentences under the guide, from ``experiments.j2``."""
        return list(self._env(None).module("experiments.j2").experiments)

    def bias_experiments(self) -> frozenset[int]:
        """The ready sentences whose answers carry the note on bias (``experiments.j2``)."""
        return frozenset(self._env(None).module("experiments.j2").bias)


def percent(score: float) -> str:
    percent = score * 100
    return f"{percent:.1f}%" if percent >= 0.1 else "<0.1%"


def _bar(score: float, width: int = 10) -> str:
    filled = round(score * width)
    return "▓" * filled + "░" * (width - filled)


def shorten(text: str, limit: int = 300, around: str | None = None) -> str:
    """At most ``limit`` characters, cut around ``around`` (e.g. the filled word) when it is given."""
    if len(text) <= limit:
        return text
    center = text.find(around) if around else -1
    if center < 0:
        return text[: limit - 1].rstrip() + "…"
    start = max(0, min(center - limit // 2, len(text) - limit + 2))
    piece = text[start : start + limit - 2].strip()
    return ("…" if start > 0 else "") + piece + ("…" if start + limit - 2 < len(text) else "")


__all__ = [
    "DEFAULT_LANGUAGE",
    "LANGUAGES",
    "REPLY_LANGUAGE",
    "Renderer",
    "percent",
    "shorten",
]
