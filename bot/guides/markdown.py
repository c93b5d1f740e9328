"""A guide page's Markdown as Telegram HTML: markdown-it-py parses (CommonMark, plus ``~~strikethrough~~``), this
module only says what each piece becomes in the few tags Telegram accepts.

What a creator writes is what people see, line for line: Telegram shows every line break, so a single newline in
the source is a newline in the message (not a space, as on a web page), and a blank line between two blocks is a
blank line in the message. Headings are bold lines, list items get ``•`` (``◦`` nested, indented), numbered
items keep their numbers, a fenced block is a code block (with its language, for the highlighting Telegram does),
``> quote`` a quote. Raw HTML is not interpreted: ``<``, ``>`` and ``&`` are plain text. A link whose URL is not
http(s) or tg:// is shown as its text only (Telegram refuses the message otherwise); ``guides check`` names it.
"""

from __future__ import annotations

import re

from markdown_it import MarkdownIt
from markdown_it.tree import SyntaxTreeNode

from bot.text.telegram_html import escape

LINK_SCHEMES = ("http://", "https://", "tg://")
BULLETS = ("•", "◦")
INDENT = "    "
RULE = "——————"
LANGUAGE = re.compile(r"[A-Za-z0-9_+#.-]{1,32}")

_PARSER = MarkdownIt("commonmark", {"html": False}).enable("strikethrough")


def parse(markdown: str) -> SyntaxTreeNode:
    return SyntaxTreeNode(_PARSER.parse(markdown))


def allowed_url(url: str) -> bool:
    return url.strip().lower().startswith(LINK_SCHEMES)


def to_telegram_html(markdown: str) -> str:
    """One page of Markdown as the HTML of one Telegram message."""
    return _blocks(parse(markdown).children, depth=0).strip()


def links(markdown: str) -> list[tuple[str, int]]:
    """Every link and image URL of a page with its line (0-based), for ``guides check``."""
    found: list[tuple[str, int]] = []

    def walk(node: SyntaxTreeNode, line: int) -> None:
        line = node.map[0] if not node.is_root and node.map else line
        if node.type in ("link", "image"):
            found.append((str(node.attrs.get("href") or node.attrs.get("src") or ""), line))
        for child in node.children:
            walk(child, line)

    walk(parse(markdown), 0)
    return found


def _gap(previous: SyntaxTreeNode, following: SyntaxTreeNode) -> str:
    """A blank line between two blocks when the source has one, else a line break."""
    if previous.map and following.map and following.map[0] > _end(previous):
        return "\n\n"
    return "\n"


def _end(node: SyntaxTreeNode) -> int:
    """The line after a block's last line of text (a list's own range takes in the blank line after it)."""
    inner = [child for child in node.children if child.map and child.type != "inline"]
    return _end(inner[-1]) if inner else node.map[1]  # type: ignore[index]


def _blocks(nodes: list[SyntaxTreeNode], depth: int, quoted: bool = False) -> str:
    out: list[str] = []
    for i, node in enumerate(nodes):
        if i:
            out.append(_gap(nodes[i - 1], node))
        out.append(_block(node, depth, quoted))
    return "".join(out)


def _block(node: SyntaxTreeNode, depth: int, quoted: bool = False) -> str:
    kind = node.type
    if kind == "heading":
        return f"<b>{_inline(node.children)}</b>"
    if kind == "paragraph":
        return _inline(node.children)
    if kind in ("bullet_list", "ordered_list"):
        return _list(node, depth, quoted)
    if kind in ("fence", "code_block"):
        code = escape(node.content.rstrip("\n"))
        language = (node.info or "").strip().split(" ")[0] if kind == "fence" else ""
        if LANGUAGE.fullmatch(language):  # a name Telegram can highlight; anything else, a plain block
            return f'<pre><code class="language-{language}">{code}</code></pre>'
        return f"<pre>{code}</pre>"
    if kind == "blockquote":  # Telegram refuses a quote in a quote: the inner one is just its text
        inner = _blocks(node.children, depth, quoted=True)
        return inner if quoted else f"<blockquote>{inner}</blockquote>"
    if kind == "hr":
        return RULE
    if kind == "inline":
        return _inline(node.children)
    return escape(node.content)  # anything else markdown-it may grow: its text, never a refused message


def _list(node: SyntaxTreeNode, depth: int, quoted: bool = False) -> str:
    ordered = node.type == "ordered_list"
    number = int(node.attrs.get("start", 1) or 1)
    delimiter = node.markup or "."
    items = []
    for item in node.children:
        marker = f"{number}{delimiter}" if ordered else BULLETS[min(depth, 1)]
        number += 1
        body = _blocks(item.children, depth + 1, quoted)
        items.append(f"{INDENT * depth}{marker} {body}")
    return "\n".join(items)


def _inline(nodes: list[SyntaxTreeNode], in_link: bool = False) -> str:
    """Inline Markdown as tags; inside a link, code is plain text (Telegram refuses a code entity in a link)."""
    out: list[str] = []
    for node in nodes:
        kind = node.type
        if kind == "text":
            out.append(escape(node.content))
        elif kind in ("softbreak", "hardbreak"):
            out.append("\n")
        elif kind == "strong":
            out.append(f"<b>{_inline(node.children, in_link)}</b>")
        elif kind == "em":
            out.append(f"<i>{_inline(node.children, in_link)}</i>")
        elif kind == "s":
            out.append(f"<s>{_inline(node.children, in_link)}</s>")
        elif kind == "code_inline":
            out.append(escape(node.content) if in_link else f"<code>{escape(node.content)}</code>")
        elif kind in ("link", "image"):
            url = str(node.attrs.get("href" if kind == "link" else "src", ""))
            allowed = allowed_url(url) and not in_link  # markdown-it never nests links; an image in a link: text
            text = _inline(node.children, in_link or allowed) or escape(node.content) or escape(url)
            out.append(f'<a href="{escape(url)}">{text}</a>' if allowed else text)
        else:
            out.append(_inline(node.children, in_link) if node.children else escape(node.content))
    return "".join(out)
