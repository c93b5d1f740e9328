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


def detect_trigger(text: str | None, keywords: Iterable[str]) -> str | None:
    """The keyword (as configured) that ``text`` contains as a whole word, or None.

    "MLM", "mlm?", "#MLM", "send me MLM please" match; "html", "xmlm", "mlmodel" do not. Word boundaries
    are Unicode-aware: letters, digits and underscores on either side make it part of another word."""
    if not text:
        return None
    haystack = normalize(text)
    for keyword in keywords:
        needle = normalize(keyword).strip()
        if needle and re.search(rf"(?<![\w]){re.escape(needle)}(?![\w])", haystack):
            return keyword
    return None
