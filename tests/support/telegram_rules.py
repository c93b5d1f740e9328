"""What Telegram refuses, checked independently of the bot's own code (``html.parser`` here): Telegram HTML with
only the tags it knows, text and caption lengths after entity parsing (in UTF-16 units, as Telegram counts),
inline keyboards and their 64-byte callback data. The fake Bot API (``fake_telegram``) answers 400 with these."""

from __future__ import annotations

import re
from html.parser import HTMLParser
from typing import Any, ClassVar

JSON_FIELDS = {
    "reply_markup", "results", "reply_parameters", "commands", "reaction", "button", "link_preview_options",
    "entities", "caption_entities", "allowed_updates", "scope", "options", "correct_option_ids", "menu_button",
}  # fmt: skip
TAGS = {
    "b": set(), "strong": set(), "i": set(), "em": set(), "u": set(), "ins": set(), "s": set(), "strike": set(),
    "del": set(), "tg-spoiler": set(), "span": {"class"}, "a": {"href"}, "code": {"class"}, "pre": set(),
    "blockquote": {"expandable"}, "tg-emoji": {"emoji-id"},
}  # fmt: skip


class ApiError(Exception):
    def __init__(self, code: int, description: str, retry_after: int | None = None, *, asked_for: bool = False) -> None:
        super().__init__(description)
        self.code, self.description, self.retry_after = code, description, retry_after
        self.asked_for = asked_for  # a refusal the test set up (a 400 for a channel's member list): not a bot bug


class _TelegramHTML(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[str] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag not in TAGS:
            raise ApiError(400, f'Bad Request: can\'t parse entities: Unsupported start tag "{tag}"')
        for name, _ in attrs:
            if name not in TAGS[tag]:
                raise ApiError(400, f"Bad Request: can't parse entities: unsupported attribute {name} of <{tag}>")
        if tag == "a" and not dict(attrs).get("href"):
            raise ApiError(400, "Bad Request: can't parse entities: <a> needs an href")
        if tag == "span" and dict(attrs).get("class") != "tg-spoiler":
            raise ApiError(400, "Bad Request: can't parse entities: <span> must be a tg-spoiler")
        if tag == "a" and "a" in self.stack:
            raise ApiError(400, "Bad Request: can't parse entities: nested links")
        # Entities may nest, except: nothing inside code or pre (but <pre><code class=...>, the language), no
        # quote in a quote, and links, code and pre never inside one another (bold, italic ... go anywhere).
        if self.stack and self.stack[-1] in ("code", "pre") and not (tag == "code" and self.stack[-1] == "pre"):
            raise ApiError(400, f"Bad Request: can't parse entities: <{tag}> inside <{self.stack[-1]}>")
        if tag == "blockquote" and "blockquote" in self.stack:
            raise ApiError(400, "Bad Request: can't parse entities: nested blockquotes")
        if tag in ("code", "pre") and "a" in self.stack:
            raise ApiError(400, f"Bad Request: can't parse entities: <{tag}> inside a link")
        self.stack.append(tag)

    def handle_endtag(self, tag: str) -> None:
        if not self.stack or self.stack[-1] != tag:
            raise ApiError(400, f"Bad Request: can't parse entities: Can't find end tag corresponding to \"{tag}\"")
        self.stack.pop()

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def parse_html(text: str) -> str:
    """Telegram's HTML rules; returns the visible text."""
    bare_lt = re.search(r"<(?!/?[a-zA-Z][a-zA-Z-]*[\s>/])", text)
    if bare_lt:
        raise ApiError(400, f"Bad Request: can't parse entities: unexpected < at byte offset {bare_lt.start()}")
    bad_amp = re.search(r"&(?!(lt|gt|amp|quot|#\d+|#x[0-9a-fA-F]+);)", text)
    if bad_amp:
        raise ApiError(400, f"Bad Request: can't parse entities: unsupported entity at offset {bad_amp.start()}")
    parser = _TelegramHTML()
    parser.feed(text)
    parser.close()
    if parser.stack:
        raise ApiError(400, f"Bad Request: can't parse entities: unclosed <{parser.stack[-1]}>")
    return "".join(parser.text)


def utf16_len(text: str) -> int:
    return len(text.encode("utf-16-le")) // 2


def check_text(text: Any, parse_mode: str | None, limit: int, what: str = "message") -> str:
    if not isinstance(text, str):
        raise ApiError(400, f"Bad Request: {what} text is empty")
    visible = text
    if parse_mode == "HTML":
        visible = parse_html(text)
    elif parse_mode == "MarkdownV2":
        unescaped = re.search(r"(?<!\\)[_*\[\]()~`>#+\-=|{}.!]", text)
        if unescaped:
            raise ApiError(400, f"Bad Request: can't parse entities: character '{unescaped.group()}' is reserved")
    elif parse_mode not in (None, ""):
        raise ApiError(400, f"Bad Request: unsupported parse_mode {parse_mode}")
    if not visible.strip():
        raise ApiError(400, f"Bad Request: {what} text is empty")
    if utf16_len(visible) > limit:
        raise ApiError(400, f"Bad Request: {what} is too long")
    return visible


def as_sent(params: dict[str, Any]) -> dict[str, Any]:
    """A message as Telegram keeps it: the visible text (formatting becomes entities, which this fake does not
    model), and here also the HTML it was sent as, to tell a real edit from "message is not modified"."""
    html = params["text"]
    text = parse_html(html) if params.get("parse_mode") == "HTML" else html
    return {"text": text, "_html": html}


def check_markup(markup: Any, chat_id: int | None = None) -> None:
    """Inline keyboards as Telegram checks them; a Mini App (``web_app``) button needs an https URL and a private
    chat (``chat_id`` > 0)."""
    if not markup:
        return
    for row in markup.get("inline_keyboard", []):
        for button in row:
            if not button.get("text"):
                raise ApiError(400, "Bad Request: inline keyboard button text is empty")
            if "callback_data" in button and not 1 <= len(button["callback_data"].encode()) <= 64:
                raise ApiError(400, "Bad Request: BUTTON_DATA_INVALID")
            if "url" in button and not re.match(r"(https?|tg)://", button["url"]):
                raise ApiError(400, "Bad Request: inline keyboard button URL is invalid")
            if "web_app" in button:
                if not str(button["web_app"].get("url", "")).startswith("https://"):
                    raise ApiError(400, "Bad Request: BUTTON_URL_INVALID")
                if chat_id is not None and chat_id < 0:
                    raise ApiError(400, "Bad Request: BUTTON_TYPE_INVALID")
            kinds = {"url", "callback_data", "switch_inline_query", "switch_inline_query_current_chat", "web_app"}
            kinds &= set(button)
            if len(kinds) != 1:
                raise ApiError(400, "Bad Request: a button needs exactly one action")


def check_commands(commands: list[dict[str, Any]]) -> bool:
    for command in commands:
        if not re.fullmatch(r"[a-z0-9_]{1,32}", command["command"]) or not 1 <= len(command["description"]) <= 256:
            raise ApiError(400, "Bad Request: BOT_COMMAND_INVALID")
    return True


def check_menu_button(button: dict[str, Any] | None) -> bool:
    """setChatMenuButton: a Mini App there needs a text and an https URL."""
    button = button or {"type": "default"}
    if button.get("type") == "web_app":
        if not button.get("text") or not str(button.get("web_app", {}).get("url", "")).startswith("https://"):
            raise ApiError(400, "Bad Request: BUTTON_URL_INVALID")
    return True


class _Entities(_TelegramHTML):
    """The entities Telegram makes of HTML, as (type, offset, length, detail) with UTF-16 offsets."""

    KINDS: ClassVar[dict[str, str]] = {
        "b": "bold", "strong": "bold", "i": "italic", "em": "italic", "u": "underline", "ins": "underline",
        "s": "strikethrough", "strike": "strikethrough", "del": "strikethrough", "tg-spoiler": "spoiler",
        "span": "spoiler", "a": "text_link", "code": "code", "pre": "pre", "blockquote": "blockquote",
    }  # fmt: skip

    def __init__(self) -> None:
        super().__init__()
        self.open: list[tuple[str, int, str | None]] = []
        self.entities: list[tuple[str, int, int, str | None]] = []

    def _offset(self) -> int:
        return utf16_len("".join(self.text))

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        super().handle_starttag(tag, attrs)
        detail = dict(attrs).get("href") or dict(attrs).get("class")
        self.open.append((tag, self._offset(), detail))

    def handle_endtag(self, tag: str) -> None:
        super().handle_endtag(tag)
        name, start, detail = self.open.pop()
        kind = self.KINDS[name]
        if kind == "code" and self.open and self.open[-1][0] == "pre":  # <pre><code class=...>: one pre entity
            pre = self.open.pop()
            self.open.append((pre[0], pre[1], (detail or "").removeprefix("language-") or None))
            return
        if self._offset() > start:
            self.entities.append((kind, start, self._offset() - start, detail))


def html_entities(html: str) -> tuple[str, list[tuple[str, int, int, str | None]]]:
    """The visible text of Telegram HTML and its entities, sorted as Telegram lists them (by offset)."""
    parse_html(html)  # refuses what Telegram refuses
    parser = _Entities()
    parser.feed(html)
    parser.close()
    return "".join(parser.text), sorted(parser.entities, key=lambda e: (e[1], -e[2], e[0]))
