"""Asking the model for a chat answer and turning it into a message: shared by DMs, /predict and inline mode."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from bot.services import BotServices
from models.results import FillMaskResult, JointFill


@dataclass(frozen=True)
class Answer:
    sentence: str
    result: FillMaskResult
    joint: JointFill | None  # the best sentence, when there are several masks

    @property
    def words(self) -> list[list[dict[str, Any]]]:
        """Per mask, the candidates as a reader sees them (RoBERTa's leading space stripped)."""
        return [[{"word": p.token_str.strip() or p.token_str, "score": p.score} for p in m] for m in self.result.masks]

    @property
    def filled(self) -> str:
        return self.joint.sequence if self.joint is not None else self.result.masks[0][0].sequence

    def for_log(self) -> list[list[dict[str, Any]]]:
        return [[{"token": d["word"], "score": round(d["score"], 6)} for d in mask] for mask in self.words]


async def ask(s: BotServices, sentence: str, top_k: int) -> Answer:
    """Per-mask candidates (words only, no ## pieces or special tokens), plus the joint fill for several masks."""
    with s.metrics.model_seconds.labels("fill_mask").time():
        result = await s.model.fill_mask(sentence, top_k=top_k, words_only=True)
    joint = None
    if len(result.masks) > 1:
        with s.metrics.model_seconds.labels("fill_joint").time():
            joint = await s.model.fill_joint(sentence, words_only=True)
    return Answer(sentence, result, joint)


def answer_html(s: BotServices, answer: Answer) -> str:
    return s.renderer.html(
        "prediction",
        text=answer.sentence,
        masks=answer.words,
        filled=answer.filled,
        mask_spelling=s.mask_spelling(answer.sentence),
        model_name=s.model_label,
        truncated=answer.result.truncated,
    )
