"""Everything the bot says comes from ``templates/`` (Jinja2); this module turns templates into messages.

* ``messages/*.html``: Telegram HTML, autoescaped, so user text echoed into them is always escaped;
* ``strings.txt``: plain-text macros (button labels, inline titles, command descriptions), not escaped,
  because Telegram shows those fields verbatim;
* ``guide.j2``: the guide, rendered from one source as Telegram HTML (messages) and as Markdown (document).
"""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Any

import jinja2

from bot.telegram_html import MESSAGE_LIMIT, escape, split_html

TEMPLATES_DIR = Path(os.environ.get("MLM_BOT_TEMPLATES", Path(__file__).resolve().parent.parent / "templates"))


class HtmlFormat:
    """Guide formatting for Telegram HTML. Code and values are escaped; nested pieces are already markup."""

    esc = staticmethod(escape)

    @staticmethod
    def title(text: str) -> str:
        return f"<b>🧠 {text}</b>"

    @staticmethod
    def h(text: str) -> str:
        return f"<b>{text}</b>"

    @staticmethod
    def b(text: str) -> str:
        return f"<b>{text}</b>"

    @staticmethod
    def i(text: str) -> str:
        return f"<i>{text}</i>"

    @staticmethod
    def code(text: str) -> str:
        return f"<code>{escape(text)}</code>"

    @staticmethod
    def pre(text: str, language: str | None = None) -> str:
        if language:
            return f'<pre><code class="language-{language}">{escape(text)}</code></pre>'
        return f"<pre>{escape(text)}</pre>"

    @staticmethod
    def link(text: str, url: str) -> str:
        return f'<a href="{escape(url)}">{text}</a>'

    @staticmethod
    def li(text: str) -> str:
        return f"• {text}"

    @staticmethod
    def sub(text: str) -> str:
        return f"    ◦ {text}"


class MarkdownFormat:
    """The same guide as a Markdown document."""

    @staticmethod
    def esc(text: str) -> str:
        return text

    @staticmethod
    def title(text: str) -> str:
        return f"# 🧠 {text}"

    @staticmethod
    def h(text: str) -> str:
        return f"## {text}"

    @staticmethod
    def b(text: str) -> str:
        return f"**{text}**"

    @staticmethod
    def i(text: str) -> str:
        return f"*{text}*"

    @staticmethod
    def code(text: str) -> str:
        return f"`{text}`"

    @staticmethod
    def pre(text: str, language: str | None = None) -> str:
        return f"```{language or ''}\n{text}\n```"

    @staticmethod
    def link(text: str, url: str) -> str:
        return f"[{text}]({url})"

    @staticmethod
    def li(text: str) -> str:
        return f"- {text}"

    @staticmethod
    def sub(text: str) -> str:
        return f"  - {text}"


class Renderer:
    def __init__(self, templates_dir: Path = TEMPLATES_DIR) -> None:
        loader = jinja2.FileSystemLoader(str(templates_dir))
        common = {"loader": loader, "undefined": jinja2.StrictUndefined, "trim_blocks": True, "lstrip_blocks": True}
        self._html = jinja2.Environment(autoescape=True, **common)
        self._plain = jinja2.Environment(autoescape=False, keep_trailing_newline=False, **common)
        self._html.filters["percent"] = percent
        self._html.filters["bar"] = _bar
        self._html.filters["shorten"] = shorten
        self._strings = self._plain.get_template("strings.txt").module
        self._guide_html = functools.lru_cache(maxsize=8)(self._render_guide_html)
        self._guide_md = functools.lru_cache(maxsize=8)(self._render_guide_md)

    def html(self, name: str, **context: Any) -> str:
        """One Telegram HTML message from ``messages/<name>.html``."""
        return self._html.get_template(f"messages/{name}.html").render(**context).strip()

    def text(self, macro: str, **context: Any) -> str:
        """A plain-text string (a button label, a title) from a macro in ``strings.txt``."""
        return str(getattr(self._strings, macro)(**context)).strip()

    def learn_more(self) -> list[tuple[str, str, str]]:
        """(button label, link text, url) of the guide's learn-more links, from ``links.j2``."""
        return list(self._plain.get_template("links.j2").module.learn_more)

    def guide_messages(self, model_name: str) -> tuple[str, ...]:
        """The guide as Telegram messages. Rendered once per model name: a viral post sends it hundreds of times."""
        return self._guide_html(model_name)

    def guide_markdown(self, model_name: str) -> str:
        return self._guide_md(model_name)

    def _render_guide_html(self, model_name: str) -> tuple[str, ...]:
        rendered = self._plain.get_template("guide.j2").render(fmt=HtmlFormat, model_name=model_name)
        return tuple(split_html(rendered, MESSAGE_LIMIT))

    def _render_guide_md(self, model_name: str) -> str:
        return self._plain.get_template("guide.j2").render(fmt=MarkdownFormat, model_name=model_name).strip() + "\n"


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


__all__ = ["HtmlFormat", "MarkdownFormat", "Renderer", "percent", "shorten"]
