"""``mlm-bot guides list|new|check``: the creator's commands for guides (docs/guides.md walks through them).

DIR is a folder of guide folders, like ``GUIDES_DIR`` (the default: ``GUIDES_DIR``, else ``./guides``). They read
``.env`` like the bot, and need no token, no model and no database.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

from bot.config import DEFAULT_GUIDES_DIR, GuideSettings
from bot.guides.library import (
    DEFAULT_SLUG,
    RESERVED_SLUGS,
    SLUG,
    GuideLibrary,
    GuideProblems,
    escape_markdown,
    load_library,
    page_environment,
)
from bot.text.render import Renderer
from bot.text.triggers import normalize


def add_arguments(parser: argparse.ArgumentParser, common: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="guides_command", required=True)
    listing = sub.add_parser("list", parents=[common], help="every guide: slug, keywords, pages, languages, folder")
    listing.add_argument("dir", nargs="?", type=Path, help="a folder of guides (default: GUIDES_DIR, else ./guides)")
    listing.set_defaults(func=cmd_list)
    new = sub.add_parser("new", parents=[common], help="write a working two-page guide to edit")
    new.add_argument("slug", help="the guide's short name: its folder and its links (a-z, 0-9, - and _)")
    new.add_argument("--keywords", required=True, help='comma-separated words that send it, e.g. "BERT,bert guide"')
    new.add_argument("--title", help="the guide's title (default: <first keyword> guide)")
    new.add_argument("--dir", type=Path, help="where (default: GUIDES_DIR, else ./guides)")
    new.set_defaults(func=cmd_new)
    check = sub.add_parser(
        "check", parents=[common], help="render every page in every language; list what Telegram would refuse"
    )
    check.add_argument("dir", nargs="?", type=Path, help="a folder of guides (default: GUIDES_DIR, else ./guides)")
    check.set_defaults(func=cmd_check)


def _settings() -> GuideSettings:
    return GuideSettings()


def load_for(settings: GuideSettings, *, check_pages: bool = True) -> GuideLibrary:
    """The guides the bot would load with these settings (GUIDES_DIR, TRIGGER_KEYWORDS ...)."""
    return _load(settings.guides_folder(), settings, check_pages=check_pages)


def _load(folder: Path | None, settings: GuideSettings, *, check_pages: bool = True) -> GuideLibrary:
    renderer = Renderer(settings.mlm_bot_templates, creator_gender=settings.creator_gender)
    return load_library(
        folder,
        environment=page_environment(renderer.template_loader, renderer.template_globals),
        default_keywords=settings.trigger_keywords,
        check_pages=check_pages,
    )


def _folder(given: Path | None, settings: GuideSettings) -> Path | None:
    return given if given is not None else settings.guides_folder()


def cmd_check(args: argparse.Namespace) -> int:
    settings = _settings()
    folder = _folder(args.dir, settings)
    try:
        library = _load(folder, settings)
    except GuideProblems as exc:
        for problem in exc.problems:
            print(problem)
        errors = sum(not p.warning for p in exc.problems)
        plural = "s" if errors != 1 else ""
        print(f"{errors} problem{plural}: the bot will not start with these guides", file=sys.stderr)
        return 1
    for warning in library.warnings:
        print(warning)
    pages = sum(g.page_count * len(g.languages) for g in library.guides)
    where = f" (shipped, and {folder})" if folder else " (shipped)"
    print(f"{len(library.guides)} guides, {pages} pages checked{where}: ok")
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    settings = _settings()
    try:
        library = _load(_folder(args.dir, settings), settings, check_pages=False)
    except GuideProblems as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        return 1
    rows = [("SLUG", "KEYWORDS", "MATCH", "PAGES", "LANGUAGES", "FOLDER")]
    for guide in library.guides:
        default = " (default)" if guide is library.default else ""
        rows.append(
            (guide.slug + default, ", ".join(guide.keywords), guide.match, str(guide.page_count),
             ", ".join(guide.languages), str(guide.folder))
        )  # fmt: skip
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())
    return 0


GUIDE_TOML = """\
# Your guide: its pages are the .md files next to this one, one Telegram message each, in the order of their
# names. Edit them, then run `mlm-bot guides check`; restart the bot or send it /reload (admins) to go live.
# Every field: docs/guides.md.
title = {title}
keywords = {keywords}
# How a message must contain a keyword: "word" (a whole word, the default), "exact" (the whole message) or
# "contains" (anywhere, even inside another word).
match = "word"
description = {description}

# URL buttons under the last page (http(s):// or tg://), two to a row. Delete or add [[links]] blocks.
[[links]]
label = "📘 BERT paper"
url = "https://arxiv.org/abs/1810.04805"
"""

FIRST_PAGE = """\
# 📘 {title}

Hey! 👋 {{% if keyword %}}You commented **{{{{ keyword }}}}**, so here it is: {{% endif %}}\
a short guide, one page at a time. Tap **Next** below for the next page.

## 1. The idea
- Write in Markdown: **bold**, *italic*, `code`, [links](https://huggingface.co/docs/transformers) and lists.
- `<`, `>` and `&` are plain text here: no escaping needed.
- Keep each page under 1,000 characters: one page is one Telegram message, and a phone screen is small.
"""

SECOND_PAGE = """\
## 2. Try it
🤔 **Guess first:** which word would the model put in the gap? Then tap the button below.
{{{{ guess("The [MASK] sat on the mat.", "🐱 The [MASK] sat on the mat.") }}}}

**Your turn:** send me any sentence with `[MASK]` in it and see what {{{{ model_name }}}} predicts, live.
"""


def _toml_string(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def cmd_new(args: argparse.Namespace) -> int:
    settings = _settings()
    root = args.dir or settings.guides_dir or DEFAULT_GUIDES_DIR
    slug = args.slug
    if not SLUG.fullmatch(slug) or slug in RESERVED_SLUGS:
        reserved = ", ".join(sorted(RESERVED_SLUGS))
        print(f"error: {slug!r}: a slug is 1-32 of a-z 0-9 _ - (starting with a letter or digit), not {reserved}",
              file=sys.stderr)  # fmt: skip
        return 2
    keywords = [k.strip() for k in args.keywords.split(",") if k.strip()]
    if not keywords:
        print('error: --keywords needs at least one word, e.g. --keywords "BERT"', file=sys.stderr)
        return 2
    target = root / slug
    if target.exists():
        print(f"error: {target} exists already: edit it, or pick another slug", file=sys.stderr)
        return 2
    try:  # the guides as they are, for a keyword another guide already answers
        taken = {normalize(k).strip(): g.slug for g in _load(root, settings, check_pages=False).guides
                 for k in g.keywords if g.slug != slug}  # fmt: skip
    except GuideProblems:
        taken = {}
    clashes = [k for k in keywords if normalize(k).strip() in taken]
    if clashes:
        owners = ", ".join(f"{k!r} ({taken[normalize(k).strip()]})" for k in clashes)
        print(f"error: already another guide's keyword: {owners}", file=sys.stderr)
        return 2
    title = args.title or f"{keywords[0]} guide"
    if slug == DEFAULT_SLUG:
        print(f"note: {target} replaces the shipped MLM guide", file=sys.stderr)
    target.mkdir(parents=True)
    (target / "guide.toml").write_text(
        GUIDE_TOML.format(
            title=_toml_string(title),
            keywords="[" + ", ".join(_toml_string(k) for k in keywords) + "]",
            description=_toml_string(f"{title}: a short guide, one page at a time."),
        ),
        encoding="utf-8",
    )
    heading = escape_markdown(re.sub(r"[\r\n]+", " ", title))  # also keeps a "{{" in a title from being Jinja
    (target / "01-intro.md").write_text(FIRST_PAGE.format(title=heading), encoding="utf-8")
    (target / "02-try-it.md").write_text(SECOND_PAGE.format(), encoding="utf-8")
    print(f"wrote {target}/: guide.toml, 01-intro.md, 02-try-it.md")
    print("next: edit the pages, run `mlm-bot guides check`, then restart the bot or send it /reload")
    if args.dir is not None and settings.guides_folder() != args.dir:
        print(f"the bot reads guides from GUIDES_DIR: set GUIDES_DIR={root} in .env", file=sys.stderr)
    return 0
