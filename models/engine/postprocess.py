"""Step 3 of the engine, on any thread: candidates back to text, exactly as the pipeline decodes them.

For one mask, the filled sentence without special tokens; for several, each sentence keeps the other masks
(the pipeline keeps every special token there, [CLS] and [SEP] included, which no reader wants). Decoding goes
through ``models.decoding.Decoder`` (the Rust tokenizer's batch decode, same strings).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from transformers import PreTrainedTokenizerBase

from models.engine.decoding import Decoder
from models.engine.results import EncodedInput, FillMaskResult, MaskScores, Prediction


class PostprocessStep:
    """The engine's postprocessing (mixed into ``FillMaskEngine``, which sets these attributes)."""

    tokenizer: PreTrainedTokenizerBase
    pad_token_id: int
    token_str: Callable[[int], str]
    _frame_ids: frozenset[int]
    _decoder: Decoder

    def postprocess(self, batch: Sequence[EncodedInput], outputs: Sequence[MaskScores]) -> list[FillMaskResult]:
        """Decode candidates and filled sentences as the pipeline does: for one mask the sentence without
        special tokens; for several, each sentence keeps the other masks (the pipeline keeps every special
        token there, [CLS] and [SEP] included, which no reader wants)."""
        plans: list[tuple[list[int], bool]] = []
        for e, out in zip(batch, outputs, strict=False):
            single = len(e.mask_positions) == 1
            # Dropped from the filled sentence: padding alone (one mask; decoding skips the special tokens), or
            # every special token but the other masks (several masks).
            dropped = {self.pad_token_id} if single else self._frame_ids
            for position, tokens in zip(e.mask_positions, out.token_ids, strict=False):
                left = [t for t in e.input_ids[:position] if t not in dropped]
                right = [t for t in e.input_ids[position + 1 :] if t not in dropped]
                for token in tokens:
                    plans.append(([*left, token, *right] if token not in dropped else left + right, single))
        sequences = self._decode_many(plans)
        results: list[FillMaskResult] = []
        n = 0
        for e, out in zip(batch, outputs, strict=False):
            masks = []
            for scores, tokens in zip(out.scores, out.token_ids, strict=False):
                row = []
                for score, token in zip(scores, tokens, strict=False):
                    row.append(
                        Prediction(score=score, token=token, token_str=self.token_str(token), sequence=sequences[n])
                    )
                    n += 1
                masks.append(tuple(row))
            results.append(FillMaskResult(masks=tuple(masks), truncated=e.truncated))
        return results

    def _decode_many(self, plans: list[tuple[list[int], bool]]) -> list[str]:
        out: list[str] = [""] * len(plans)
        for skip in (True, False):
            idx = [i for i, (_, s) in enumerate(plans) if s is skip]
            if idx:
                decoded = self._decoder.batch_decode([plans[i][0] for i in idx], skip_special_tokens=skip)
                for i, text in zip(idx, decoded, strict=False):
                    out[i] = text
        return out

    def _decode_token(self, token_id: int) -> str:
        return self.tokenizer.decode([token_id])

    def decode(self, ids: Sequence[int]) -> str:
        return self.tokenizer.decode(list(ids), skip_special_tokens=True)
