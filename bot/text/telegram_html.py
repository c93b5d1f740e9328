"""Telegram's HTML parse mode: escaping, validation, visible length and splitting into messages.

Telegram accepts a small set of tags, needs ``<``, ``>`` and ``&`` escaped everywhere else, and limits a message
to 4096 characters *after* parsing (counted in UTF-16 code units). A long text must be cut where no tag is
open, or the second half fails with "Can't parse entities".
"""

from __future__ import annotations

import html
import re
from dataclasses import dataclass

MESSAGE_LIMIT = 4096

_ALLOWED = {
    "b", "strong", "i", "em", "u", "ins", "s", "strike", "del", "span", "tg-spoiler", "a", "tg-emoji",
    "code", "pre", "blockquote",
}  # fmt: skip
_TOKEN = re.compile(r"<[^<>]*>|&#?\w*;?|[^<&]+|[<&]")
_TAG = re.compile(r"<(/?)([a-z][a-z-]*)((?:\s+[a-z-]+(?:=\"[^\"]*\"|='[^']*')?)*)\s*>$", re.I)
_NAMED_ENTITIES = {"&lt;": "<", "&gt;": ">", "&amp;": "&", "&quot;": '"'}


class TelegramHTMLError(ValueError):
    """Text Telegram would refuse with "Can't parse entities"."""


def escape(text: str) -> str:
    return html.escape(text, quote=False)


@dataclass(frozen=True)
class _Token:
    raw: str
    kind: str  # "text", "open", "close"
    name: str = ""


def _tokens(markup: str) -> list[_Token]:
    out: list[_Token] = []
    for match in _TOKEN.finditer(markup):
        raw = match.group()
        if raw.startswith("<"):
            tag = _TAG.match(raw)
            if tag is None:
                raise TelegramHTMLError(f"unsupported or broken tag {raw!r}")
            name = tag.group(2).lower()
            if name not in _ALLOWED:
                raise TelegramHTMLError(f"unsupported tag <{name}>")
            if name == "a" and not tag.group(1) and "href=" not in tag.group(3):
                raise TelegramHTMLError("<a> without href")
            out.append(_Token(raw, "close" if tag.group(1) else "open", name))
        elif raw.startswith("&"):
            if raw in _NAMED_ENTITIES or re.fullmatch(r"&#(\d+|x[0-9a-fA-F]+);", raw):
                out.append(_Token(raw, "text"))
            else:
                raise TelegramHTMLError(f"unescaped & or unknown entity {raw!r}")
        else:
            out.append(_Token(raw, "text"))
    return out


def visible_text(markup: str) -> str:
    """The text Telegram shows, after checking the markup as strictly as Telegram does."""
    stack: list[str] = []
    parts: list[str] = []
    for token in _tokens(markup):
        if token.kind == "open":
            stack.append(token.name)
        elif token.kind == "close":
            if not stack or stack[-1] != token.name:
                raise TelegramHTMLError(f"</{token.name}> does not close the open tag")
            stack.pop()
        else:
            parts.append(html.unescape(token.raw) if token.raw.startswith("&") else token.raw)
    if stack:
        raise TelegramHTMLError(f"<{stack[-1]}> is never closed")
    return "".join(parts)


def visible_length(markup: str) -> int:
    """Length as Telegram counts it: UTF-16 code units of the visible text."""
    return len(visible_text(markup).encode("utf-16-le")) // 2


def split_html(markup: str, limit: int = MESSAGE_LIMIT) -> list[str]:
    """Cut ``markup`` into messages of at most ``limit`` visible characters, at paragraph breaks where
    possible, then at line breaks, then at spaces, always where no tag is open. A single unbreakable run
    longer than the limit (a huge code block) is cut with its tags closed and reopened around the cut."""
    markup = markup.strip()
    if visible_length(markup) <= limit:
        return [markup] if markup else []
    return [piece.strip() for piece in _split(markup, limit, ("\n\n", "\n", " ")) if piece.strip()]


def _split(markup: str, limit: int, separators: tuple[str, ...]) -> list[str]:
    if visible_length(markup) <= limit:
        return [markup]
    if not separators:
        return _hard_split(markup, limit)
    separator, rest = separators[0], separators[1:]
    out: list[str] = []
    current = ""
    for block in _top_level_split(markup, separator):
        candidate = f"{current}{separator}{block}" if current else block
        if visible_length(candidate) <= limit:
            current = candidate
            continue
        if current:
            out.append(current)
        if visible_length(block) <= limit:
            current = block
        else:
            out.extend(_split(block, limit, rest))
            current = ""
    if current:
        out.append(current)
    return out


def _top_level_split(markup: str, separator: str) -> list[str]:
    """Split at ``separator`` only where no tag is open."""
    pieces: list[str] = []
    depth = 0
    current: list[str] = []
    for token in _tokens(markup):
        if token.kind == "open":
            depth += 1
        elif token.kind == "close":
            depth -= 1
        if token.kind == "text" and depth == 0 and separator in token.raw:
            head, *middle, tail = token.raw.split(separator)
            current.append(head)
            pieces.append("".join(current))
            pieces.extend(middle)
            current = [tail]
        else:
            current.append(token.raw)
    pieces.append("".join(current))
    return pieces


def _prefix_within(text: str, units: int) -> str:
    """The longest prefix of ``text`` that fits in ``units`` UTF-16 code units."""
    used = 0
    for i, char in enumerate(text):
        used += 2 if ord(char) > 0xFFFF else 1
        if used > units:
            return text[:i]
    return text


def _hard_split(markup: str, limit: int) -> list[str]:
    out: list[str] = []
    stack: list[_Token] = []
    current: list[str] = []
    length = 0
    for token in _tokens(markup):
        if token.kind == "open":
            stack.append(token)
            current.append(token.raw)
            continue
        if token.kind == "close":
            stack.pop()
            current.append(token.raw)
            continue
        text = html.unescape(token.raw) if token.raw.startswith("&") else token.raw
        while text:
            take = _prefix_within(text, limit - length)
            if take:
                current.append(escape(take) if not token.raw.startswith("&") else token.raw)
                length += len(take.encode("utf-16-le")) // 2
                text = text[len(take) :]
            if text:  # the message is full: close what is open, start the next one reopening it
                current.extend(f"</{t.name}>" for t in reversed(stack))
                out.append("".join(current))
                current = [t.raw for t in stack]
                length = 0
    out.append("".join(current))
    return out
