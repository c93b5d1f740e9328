"""Value objects that travel between the engine, the batcher, the worker service and the bot.

They are plain frozen dataclasses so they cross threads and (as JSON) the network without surprises.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any


@dataclass(frozen=True)
class FillMaskRequest:
    """One sentence to fill. ``targets`` restricts the candidates; ``words_only`` drops special tokens and
    word-piece continuations (``##ing``) from the candidates, which a chat user wants but HF does not do."""

    text: str
    top_k: int = 5
    targets: tuple[str, ...] | None = None
    words_only: bool = False
    # Background work (the Mini App's playground): the model takes it only when no chat request is waiting.
    background: bool = False


@dataclass(frozen=True)
class EncodedInput:
    """A tokenized, validated request: what the model thread needs and nothing else."""

    input_ids: tuple[int, ...]
    mask_positions: tuple[int, ...]
    top_k: int
    target_ids: tuple[int, ...] | None = None
    words_only: bool = False
    truncated: bool = False

    def __len__(self) -> int:
        return len(self.input_ids)

    def with_token(self, position: int, token_id: int) -> EncodedInput:
        """The same input with the mask at ``position`` replaced by ``token_id`` (used by the joint fill)."""
        ids = list(self.input_ids)
        ids[position] = token_id
        remaining = tuple(p for p in self.mask_positions if p != position)
        return replace(self, input_ids=tuple(ids), mask_positions=remaining)


@dataclass(frozen=True)
class MaskScores:
    """The model's answer for one input: per mask, the top-k probabilities and token ids, best first."""

    scores: tuple[tuple[float, ...], ...]
    token_ids: tuple[tuple[int, ...], ...]


@dataclass(frozen=True)
class Prediction:
    score: float
    token: int
    token_str: str
    sequence: str

    def to_dict(self) -> dict[str, Any]:
        return {"score": self.score, "token": self.token, "token_str": self.token_str, "sequence": self.sequence}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Prediction:
        return cls(
            score=float(data["score"]),
            token=int(data["token"]),
            token_str=str(data["token_str"]),
            sequence=str(data["sequence"]),
        )


@dataclass(frozen=True)
class FillMaskResult:
    """Per mask (in text order) the candidates, best first."""

    masks: tuple[tuple[Prediction, ...], ...]
    truncated: bool = False

    def to_hf(self) -> list[dict[str, Any]] | list[list[dict[str, Any]]]:
        """The shape ``pipeline("fill-mask")`` returns: a list for one mask, a list of lists for several."""
        rows = [[p.to_dict() for p in mask] for mask in self.masks]
        return rows[0] if len(rows) == 1 else rows

    @classmethod
    def from_hf(cls, data: list[Any], *, truncated: bool = False) -> FillMaskResult:
        rows = data if data and isinstance(data[0], list) else [data]
        return cls(
            masks=tuple(tuple(Prediction.from_dict(d) for d in row) for row in rows),
            truncated=truncated,
        )


@dataclass(frozen=True)
class JointStep:
    """One step of the joint fill: which mask (0-based, in text order) got which token, and its probability
    at the moment it was chosen (given the masks filled before it)."""

    mask_index: int
    token: int
    token_str: str
    score: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "mask_index": self.mask_index,
            "token": self.token,
            "token_str": self.token_str,
            "score": self.score,
        }


@dataclass(frozen=True)
class JointFill:
    """The "best sentence": every mask filled, most confident first, re-running the model after each."""

    sequence: str
    steps: tuple[JointStep, ...]
    truncated: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {
            "sequence": self.sequence,
            "steps": [s.to_dict() for s in self.steps],
            "truncated": self.truncated,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> JointFill:
        return cls(
            sequence=str(data["sequence"]),
            steps=tuple(
                JointStep(
                    mask_index=int(s["mask_index"]),
                    token=int(s["token"]),
                    token_str=str(s["token_str"]),
                    score=float(s["score"]),
                )
                for s in data["steps"]
            ),
            truncated=bool(data.get("truncated", False)),
        )
