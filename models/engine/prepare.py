"""Step 1 of the engine, on any thread: raw text to token ids, ready for the model.

Every way people write the mask becomes the tokenizer's mask token; empty text, no mask, too many masks, a bad
``top_k`` and over-long text raise typed errors a chat user understands; the tokenizer's batch API tokenizes
many requests at once; input longer than the model reads is cut to a window that keeps every mask; targets
must be single vocabulary tokens.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from functools import lru_cache

from transformers import PreTrainedTokenizerBase

from models.engine.errors import (
    EmptyInputError,
    FillMaskError,
    InputTooLongError,
    InvalidParameterError,
    NoMaskError,
    TargetNotSingleTokenError,
    TooManyMasksError,
)
from models.engine.results import EncodedInput, FillMaskRequest

MAX_TOP_K = 50
MAX_TARGETS = 100

# What people type for "the missing word": [MASK] (BERT, ALBERT, DistilBERT) or <mask> (RoBERTa), any case.
MASK_ALIASES = r"\[\s*mask\s*\]|<\s*mask\s*>"


class Preparer:
    """The engine's first step: raw text to ``EncodedInput``, on any thread (nothing here touches torch)."""

    def __init__(
        self,
        tokenizer: PreTrainedTokenizerBase,
        vocab: dict[str, int],
        *,
        max_masks: int,
        max_input_chars: int,
        max_length: int,
        vocab_size: int,
    ) -> None:
        self.tokenizer = tokenizer
        self.mask_token: str = tokenizer.mask_token
        self.mask_token_id: int = tokenizer.mask_token_id
        self.unk_token_id: int | None = tokenizer.unk_token_id
        self.max_masks = max_masks
        self.max_input_chars = max_input_chars
        self.max_length = max_length
        self.vocab_size = vocab_size
        self.prefix_len, self.suffix_len = special_frame(tokenizer)
        self._alias_re = re.compile(f"{MASK_ALIASES}|{re.escape(self.mask_token)}", re.IGNORECASE)
        self._vocab = vocab
        self._target_ids: Callable[[tuple[str, ...]], tuple[int, ...]] = lru_cache(maxsize=1024)(self._resolve_targets)

    def normalize(self, text: str) -> str:
        """Validate the raw text and write every mask alias as the model's own mask token."""
        if not isinstance(text, str) or not text.strip():
            raise EmptyInputError("The text is empty. Send a sentence with [MASK] where a word is missing.")
        if len(text) > self.max_input_chars:
            raise InputTooLongError(
                f"The text is too long ({len(text)} characters; the limit is {self.max_input_chars}).",
                limit=self.max_input_chars,
            )
        normalized, count = self._alias_re.subn(self.mask_token, text.strip())
        if count == 0:
            raise NoMaskError(
                "There is no mask in the text. Write [MASK] where the missing word goes, "
                "e.g. “The cat sat on the [MASK].”"
            )
        if count > self.max_masks:
            raise TooManyMasksError(
                f"The text has {count} masks; the limit is {self.max_masks}. Use fewer [MASK] tokens.",
                count=count,
                limit=self.max_masks,
            )
        return normalized

    def prepare(self, request: FillMaskRequest) -> EncodedInput:
        result = self.prepare_batch([request])[0]
        if isinstance(result, FillMaskError):
            raise result
        return result

    def prepare_batch(self, requests: Sequence[FillMaskRequest]) -> list[EncodedInput | FillMaskError]:
        """Validate and tokenize many requests with one call of the tokenizer's batch API.

        Each slot holds the encoded input or the typed error for that request, so one bad sentence never
        fails its neighbours."""
        out: list[EncodedInput | FillMaskError | None] = [None] * len(requests)
        texts: list[str] = []
        slots: list[int] = []
        for i, request in enumerate(requests):
            try:
                _check_top_k(request.top_k)
                texts.append(self.normalize(request.text))
                slots.append(i)
            except FillMaskError as exc:
                out[i] = exc
        for i, ids in zip(slots, self._encode(texts), strict=False):
            try:
                out[i] = self._to_encoded(requests[i], ids)
            except FillMaskError as exc:
                out[i] = exc
        return out  # type: ignore[return-value]

    def _encode(self, texts: list[str]) -> list[list[int]]:
        if not texts:
            return []
        backend = getattr(self.tokenizer, "backend_tokenizer", None)
        if backend is not None:
            # The Rust tokenizer directly: no per-call padding/truncation state to race on between threads.
            return [e.ids for e in backend.encode_batch(texts, add_special_tokens=True)]
        return self.tokenizer(texts, add_special_tokens=True)["input_ids"]

    def _to_encoded(self, request: FillMaskRequest, ids: list[int]) -> EncodedInput:
        positions = [i for i, t in enumerate(ids) if t == self.mask_token_id]
        if not positions:
            raise NoMaskError("The mask was lost while reading the text. Put [MASK] between spaces and try again.")
        truncated = False
        if len(ids) > self.max_length:
            ids, positions = self._window(ids, positions)
            truncated = True
        target_ids = self._target_ids(request.targets) if request.targets is not None else None
        top_k = min(request.top_k, len(target_ids) if target_ids else self.vocab_size)
        return EncodedInput(
            input_ids=tuple(ids),
            mask_positions=tuple(positions),
            top_k=top_k,
            target_ids=target_ids,
            words_only=request.words_only,
            truncated=truncated,
        )

    def _window(self, ids: list[int], positions: list[int]) -> tuple[list[int], list[int]]:
        """Cut long input to the model's limit, keeping every mask and as much context around them as fits."""
        prefix, suffix = self.prefix_len, self.suffix_len
        content = ids[prefix : len(ids) - suffix]
        budget = self.max_length - prefix - suffix
        first, last = positions[0] - prefix, positions[-1] - prefix
        span = last - first + 1
        if span > budget:
            raise InputTooLongError(
                f"The masks are too far apart for this model ({span} tokens between the first and the last; "
                f"it reads at most {budget}). Put them closer together or send a shorter text."
            )
        start = first - (budget - span) // 2
        start = max(0, min(start, len(content) - budget))
        window = ids[:prefix] + content[start : start + budget] + ids[len(ids) - suffix :]
        return window, [p - start for p in positions]

    def _resolve_targets(self, targets: tuple[str, ...]) -> tuple[int, ...]:
        """Each target must be one vocabulary token. Unlike the pipeline, a word that is not is reported, never
        replaced by its first fragment. Lookup order: the exact vocabulary entry (as HF), then the word as the
        tokenizer reads it alone, then with a leading space (so ``cat`` finds RoBERTa's ``Ġcat``)."""
        if not targets:
            raise InvalidParameterError("targets must name at least one word.")
        if len(targets) > MAX_TARGETS:
            raise InvalidParameterError(f"At most {MAX_TARGETS} targets are allowed; got {len(targets)}.")
        found: list[int] = []
        rejected: list[str] = []
        for target in targets:
            token_id = self._single_token_id(target) if isinstance(target, str) and target.strip() else None
            if token_id is None:
                rejected.append(str(target))
            else:
                found.append(token_id)
        if rejected:
            raise TargetNotSingleTokenError(
                "These words are not single tokens in the model's vocabulary, so it cannot score them as one "
                f"word: {', '.join(rejected)}. Try simpler or more common words.",
                targets=rejected,
            )
        return tuple(dict.fromkeys(found))

    def _single_token_id(self, word: str) -> int | None:
        if word in self._vocab:
            return self._vocab[word]
        for variant in (word.strip(), " " + word.strip()):
            pieces = self._encode_plain(variant)
            if len(pieces) == 1 and pieces[0] != self.unk_token_id:
                return pieces[0]
        return None

    def _encode_plain(self, text: str) -> list[int]:
        backend = getattr(self.tokenizer, "backend_tokenizer", None)
        if backend is not None:
            return backend.encode(text, add_special_tokens=False).ids
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]


def _check_top_k(top_k: object) -> None:
    if isinstance(top_k, bool) or not isinstance(top_k, int) or not 1 <= top_k <= MAX_TOP_K:
        raise InvalidParameterError(f"top_k must be a whole number from 1 to {MAX_TOP_K}; got {top_k!r}.")


def special_frame(tokenizer: PreTrainedTokenizerBase) -> tuple[int, int]:
    """How many special tokens the tokenizer puts before and after a single text ([CLS] .. [SEP] -> 1, 1)."""
    plain = tokenizer("a", add_special_tokens=False)["input_ids"]
    framed = tokenizer("a", add_special_tokens=True)["input_ids"]
    for start in range(len(framed) - len(plain) + 1):
        if framed[start : start + len(plain)] == plain:
            return start, len(framed) - start - len(plain)
    total = tokenizer.num_special_tokens_to_add(pair=False)
    return min(1, total), total - min(1, total)
