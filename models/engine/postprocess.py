"""Step 3 of the engine, on any thread: candidates back to text, exactly as the pipeline decodes them.

For one mask, the filled sentence without special tokens; for several, each sentence keeps the other masks
(the pipeline keeps every special token there, [CLS] and [SEP] included, which no reader wants). Decoding goes
through ``models.engine.decoding.Decoder`` (the Rust tokenizer's batch decode, same strings).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import lru_cache

from transformers import PreTrainedTokenizerBase

from models.engine.decoding import Decoder
from models.engine.results import EncodedInput, FillMaskResult, MaskScores, Prediction


class Postprocessor:
    """The engine's last step: scores back to ``FillMaskResult``, on any thread."""

    def __init__(self, tokenizer: PreTrainedTokenizerBase) -> None:
        self.tokenizer = tokenizer
        self.pad_token_id: int = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        # Special tokens other than the mask are dropped from multi-mask sequences; the pipeline keeps them.
        self.frame_ids = frozenset(set(tokenizer.all_special_ids) - {tokenizer.mask_token_id})
        self.decoder = Decoder(tokenizer)
        self.token_str: Callable[[int], str] = lru_cache(maxsize=65536)(self._decode_token)

    def postprocess(self, batch: Sequence[EncodedInput], outputs: Sequence[MaskScores]) -> list[FillMaskResult]:
        """Decode candidates and filled sentences as the pipeline does: for one mask the sentence without
        special tokens; for several, each sentence keeps the other masks (the pipeline keeps every special
        token there, [CLS] and [SEP] included, which no reader wants)."""
        plans: list[tuple[list[int], bool]] = []
        for e, out in zip(batch, outputs, strict=False):
            single = len(e.mask_positions) == 1
            # Dropped from the filled sentence: padding alone (one mask; decoding skips the special tokens), or
            # every special token but the other masks (several masks).
            dropped = {self.pad_token_id} if single else self.frame_ids
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
                decoded = self.decoder.batch_decode([plans[i][0] for i in idx], skip_special_tokens=skip)
                for i, text in zip(idx, decoded, strict=False):
                    out[i] = text
        return out

    def _decode_token(self, token_id: int) -> str:
        return self.tokenizer.decode([token_id])

    def decode(self, ids: Sequence[int]) -> str:
        return self.tokenizer.decode(list(ids), skip_special_tokens=True)
