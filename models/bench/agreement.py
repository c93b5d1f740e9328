"""How closely one engine's answers follow another's (int8 or bf16 against fp32), mask by mask."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class Agreement:
    masks: int
    top1_equal: float  # share of masks whose top word is the same
    top5_overlap: float  # mean share of the reference's top 5 that the other engine also returns
    max_probability_gap: float  # largest |p - p_ref| over the reference's top 5 words

    def as_dict(self) -> dict[str, float]:
        return asdict(self)

    def __str__(self) -> str:
        return (
            f"{self.masks} masks: top-1 equal {self.top1_equal:.1%}, top-5 overlap {self.top5_overlap:.1%}, "
            f"largest probability gap {self.max_probability_gap:.4f}"
        )


def agreement(reference, engine, texts: Sequence[str], top_k: int = 5) -> Agreement:
    """Both engines fill every mask of ``texts``; ``reference``'s top ``top_k`` is the yardstick. The gap is
    measured on the reference's words with ``targets``, so a word that left the other top 5 still counts."""
    masks = top1 = 0
    overlap = gap = 0.0
    for text in texts:
        ours = reference.fill(text, top_k=top_k).masks
        theirs = engine.fill(text, top_k=top_k).masks
        for ref, other in zip(ours, theirs, strict=True):
            masks += 1
            top1 += ref[0].token == other[0].token
            overlap += len({p.token for p in ref} & {p.token for p in other}) / len(ref)
        words = sorted({p.token_str for mask in ours for p in mask})
        scored = engine.fill(text, top_k=len(words), targets=words).masks
        for ref, other in zip(ours, scored, strict=True):
            by_token = {p.token: p.score for p in other}
            gap = max([gap] + [abs(p.score - by_token[p.token]) for p in ref if p.token in by_token])
    return Agreement(masks, top1 / masks, overlap / masks, gap)
