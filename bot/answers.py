"""Asking the model for a chat answer and turning it into a message: shared by DMs, /predict and inline mode."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from bot.services import BotServices
from models.engine.results import FillMaskResult, JointFill


@dataclass(frozen=True)
class Answer:
    sentence: str
    result: FillMaskResult
    joint: JointFill | None  # the best sentence, when there are several masks
    mask_pattern: re.Pattern[str] | None = None  # how the engine finds the masks in ``sentence``

    @property
    def words(self) -> list[list[dict[str, Any]]]:
        """Per mask, the candidates as a reader sees them (RoBERTa's leading space stripped)."""
        return [[{"word": p.token_str.strip() or p.token_str, "score": p.score} for p in m] for m in self.result.masks]

    @property
    def filled(self) -> str:
        """The person's sentence with the best words in place, as they wrote it (an uncased model's own
        sequence is all lower case: "the eiffel tower is in paris."); the model's sequence if the masks cannot
        be matched up."""
        if self.joint is not None:
            steps = sorted(self.joint.steps, key=lambda step: step.mask_index)
            words = [step.token_str.strip() or step.token_str for step in steps]
            fallback = self.joint.sequence
        else:
            words, fallback = [mask[0]["word"] for mask in self.words], self.result.masks[0][0].sequence
        if self.mask_pattern is None:
            return fallback
        return in_their_words(self.sentence, words, self.mask_pattern) or fallback

    def for_log(self) -> list[list[dict[str, Any]]]:
        return [[{"token": d["word"], "score": round(d["score"], 6)} for d in mask] for mask in self.words]


SENTENCE_START = re.compile(r"(?:^|[.!?…]\s+)[\"'“‘(\[]*$")


def in_their_words(sentence: str, words: list[str], mask: re.Pattern[str]) -> str | None:
    """``sentence`` with its masks replaced by ``words``, in order, everything else as typed; a word that
    starts a sentence gets a capital. None when the masks found are not as many as the words."""
    found = list(mask.finditer(sentence))
    if len(found) != len(words):
        return None
    parts, last = [], 0
    for match, word in zip(found, words, strict=True):
        if SENTENCE_START.search(sentence[: match.start()]):
            word = word[:1].upper() + word[1:]
        parts += [sentence[last : match.start()], word]
        last = match.end()
    parts.append(sentence[last:])
    return "".join(parts)


async def ask(s: BotServices, sentence: str, top_k: int) -> Answer:
    """Per-mask candidates (words only, no ## pieces or special tokens), plus the joint fill for several masks."""
    with s.metrics.model_seconds.labels("fill_mask").time():
        result = await s.model.fill_mask(sentence, top_k=top_k, words_only=True)
    joint = None
    if len(result.masks) > 1:
        with s.metrics.model_seconds.labels("fill_joint").time():
            joint = await s.model.fill_joint(sentence, words_only=True)
    return Answer(sentence, result, joint, s.mask_pattern)


def answer_html(s: BotServices, answer: Answer) -> str:
    return s.renderer.html(
        "prediction",
        text=answer.sentence,
        masks=answer.words,
        filled=answer.filled,
        mask_spelling=s.mask_spelling(answer.sentence),
        model_name=s.model_label,
        precision=s.model.precision,
        truncated=answer.result.truncated,
    )
