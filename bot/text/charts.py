"""The "📊 Chart" picture of a prediction: each mask's candidates as bars on one absolute 0-100% scale."""

from __future__ import annotations

import io
import warnings
from typing import Any

# Emoji and scripts the bundled font lacks are drawn as boxes; a warning per picture would only fill the log.
warnings.filterwarnings("ignore", message=r"Glyph \d+ .* missing from font", category=UserWarning)


def _plain(text: str) -> str:
    """matplotlib reads $...$ as math: a word or sentence with a dollar sign must stay text."""
    return text.replace("$", r"\$")


def prediction_chart(masks: list[list[dict[str, Any]]], *, title: str, mask_label: str, axis_label: str) -> bytes:
    """PNG bytes. ``masks``: per mask, the candidates as ``{"word", "score"}``, best first. CPU work (about a
    tenth of a second): call it in a thread."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    figure = Figure(figsize=(7, 1.0 + 2.0 * len(masks)), dpi=120)
    figure.suptitle(_plain(title), fontsize=11)
    for number, mask in enumerate(masks, start=1):
        axes = figure.add_subplot(len(masks), 1, number)
        words = [_plain(candidate["word"]) for candidate in mask][::-1]  # the best at the top
        percents = [candidate["score"] * 100 for candidate in mask][::-1]
        axes.barh(range(len(words)), percents, color="#3b7dd8")
        axes.set_yticks(range(len(words)), words)
        axes.set_xlim(0, 100)  # absolute: a 12% guess is a short bar even when it is the best one
        for y, value in enumerate(percents):
            axes.text(min(value + 1.5, 86), y, f"{value:.1f}%", va="center", fontsize=9)
        if len(masks) > 1:
            axes.set_title(f"{mask_label} {number}", fontsize=10, loc="left")
        axes.set_xlabel(axis_label, fontsize=9)
        axes.grid(axis="x", alpha=0.3)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()
