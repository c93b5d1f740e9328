"""The joint fill: one coherent sentence for several masks, filling the most confident mask first.

Per-mask top-k (the pipeline's answer) scores each mask as if the others stayed masked, so its top words can
contradict each other ("the [MASK] [MASK]" -> "new new"); here each choice is conditioned on the ones before.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol

from models.engine.results import EncodedInput, JointFill, JointStep, MaskScores


class Words(Protocol):
    """What the joint fill needs from the engine: token ids back to words."""

    token_str: Callable[[int], str]

    def decode(self, input_ids: Sequence[int]) -> str: ...


def run_joint_fill(
    engine: Words, encoded: EncodedInput, forward_one: Callable[[EncodedInput], MaskScores]
) -> JointFill:
    """Fill the most confident mask first, re-run the model with it filled in, repeat until none is left.

    Per-mask top-k (the pipeline's answer) scores each mask as if the others stayed masked, so its top
    words can contradict each other ("the [MASK] [MASK]" -> "new new"). The joint fill conditions each
    choice on the ones made before it, which gives one coherent sentence."""
    state = JointFillState(engine, encoded)
    while not state.done:
        state.advance(forward_one(state.current))
    return state.result()


class JointFillState:
    """The joint fill as a small state machine, so the same steps drive a sync and an async loop."""

    def __init__(self, engine: Words, encoded: EncodedInput) -> None:
        self.engine = engine
        self.original = encoded.mask_positions
        self.current = EncodedInput(
            input_ids=encoded.input_ids,
            mask_positions=encoded.mask_positions,
            top_k=1,
            target_ids=encoded.target_ids,
            words_only=encoded.words_only,
            truncated=encoded.truncated,
        )
        self.steps: list[JointStep] = []

    @property
    def done(self) -> bool:
        return not self.current.mask_positions

    def advance(self, scores: MaskScores) -> None:
        best = max(range(len(scores.scores)), key=lambda i: scores.scores[i][0])
        position = self.current.mask_positions[best]
        token, score = scores.token_ids[best][0], scores.scores[best][0]
        self.steps.append(JointStep(self.original.index(position), token, self.engine.token_str(token), score))
        self.current = self.current.with_token(position, token)

    def result(self) -> JointFill:
        return JointFill(self.engine.decode(self.current.input_ids), tuple(self.steps), self.current.truncated)
