"""Guides: folders of Markdown pages with their keywords (``bot.guides.library``), their Telegram rendering
(``bot.guides.markdown``) and the creator's commands (``bot.guides.commands``)."""

from bot.guides.library import (
    DEFAULT_SLUG,
    Guide,
    GuideLibrary,
    GuideProblems,
    Page,
    Problem,
    Prompt,
    load_library,
    page_environment,
)

__all__ = [
    "DEFAULT_SLUG",
    "Guide",
    "GuideLibrary",
    "GuideProblems",
    "Page",
    "Problem",
    "Prompt",
    "load_library",
    "page_environment",
]
