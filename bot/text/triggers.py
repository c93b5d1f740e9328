"""Does a message ask for the guide? A keyword as a whole word, in any case, after Unicode normalisation."""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable

# Format characters (zero-width space/joiners, word joiner, BOM, directional marks) that people paste or that
# apps insert; "M\u200bLM" is still "MLM" to a reader.
_INVISIBLE = re.compile(r"[\u00ad\u180e\u200b-\u200f\u202a-\u202e\u2060-\u2064\ufeff]")


def normalize(text: str) -> str:
    """NFKC (full-width ＭＬＭ -> MLM, ligatures, compatibility forms), invisible characters removed,
    case-folded."""
    return _INVISIBLE.sub("", unicodedata.normalize("NFKC", text)).casefold()


MATCH_RULES = ("word", "exact", "contains")
_EDGES = re.compile(r"^[\W_]+|[\W_]+$")


def matches(haystack: str, needle: str, rule: str = "word") -> bool:
    """Whether normalized text matches a normalized keyword under a guide's rule:

    * ``word`` (the default): the keyword as a whole word. "MLM", "mlm?", "#MLM", "send me MLM please" match;
      "html", "xmlm", "mlmodel" do not. Word boundaries are Unicode-aware: letters, digits and underscores on
      either side make it part of another word;
    * ``exact``: the whole message is the keyword, give or take spaces, punctuation and emoji around it;
    * ``contains``: anywhere, even inside another word ("bert" in "roberta")."""
    if rule == "contains":
        return needle in haystack
    if rule == "exact":
        return _EDGES.sub("", haystack) == _EDGES.sub("", needle)
    return re.search(rf"(?<![\w]){re.escape(needle)}(?![\w])", haystack) is not None


def detect_trigger(text: str | None, keywords: Iterable[str], rule: str = "word") -> str | None:
    """The keyword (as configured) that ``text`` contains under ``rule`` (see :func:`matches`), or None."""
    if not text:
        return None
    haystack = normalize(text)
    for keyword in keywords:
        needle = normalize(keyword).strip()
        if needle and matches(haystack, needle, rule):
            return keyword
    return None
