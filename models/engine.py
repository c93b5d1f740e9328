"""The fill-mask engine: Hugging Face's fill-mask results, without the pipeline object on the hot path.

Shaped like an HF pipeline, as three steps that can run on different threads:

* ``prepare_batch`` (any thread): mask aliases, validation, tokenization with the tokenizer's batch API,
  a window around the masks for long input, target resolution;
* ``forward`` (the one model thread): pad, run the encoder, gather the hidden states at the mask positions,
  apply the MLM head there only, softmax, top-k; one host transfer per batch;
* ``postprocess`` (any thread): decode candidates and filled sentences exactly as the pipeline does.

``fill`` and ``fill_joint`` chain the three for one request; the batcher chains them for many.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import lru_cache
from pathlib import Path

import torch
from torch import nn
from transformers import AutoModelForMaskedLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from models.cuda_graphs import GraphedEncoder
from models.decoding import Decoder
from models.device import resolve_device, resolve_dtype
from models.errors import (
    EmptyInputError,
    FillMaskError,
    InputTooLongError,
    InvalidParameterError,
    NoMaskError,
    TargetNotSingleTokenError,
    TooManyMasksError,
)
from models.loading import explain, resolve_source
from models.results import (
    EncodedInput,
    FillMaskRequest,
    FillMaskResult,
    JointFill,
    JointStep,
    MaskScores,
    Prediction,
)

log = logging.getLogger(__name__)

MAX_TOP_K = 50
MAX_TARGETS = 100
DEFAULT_MAX_MASKS = 5
DEFAULT_MAX_INPUT_CHARS = 20_000
PROBE_TEXT = "The cat sat on the {mask}."

# What people type for "the missing word": [MASK] (BERT, ALBERT, DistilBERT) or <mask> (RoBERTa), any case.
MASK_ALIASES = r"\[\s*mask\s*\]|<\s*mask\s*>"

HeadFn = Callable[[torch.Tensor], torch.Tensor]


class FillMaskEngine:
    """A masked LM and its tokenizer, ready to fill masks.

    Thread rules: all torch work (loading, warm-up, ``forward``) runs on the engine's one model thread,
    ``model_thread``; ``prepare_batch`` and ``postprocess`` run on any thread, concurrently. One thread is not
    only about safety: on CPU every thread that runs torch gets its own OpenMP team, and two teams on the same
    cores made each forward about 15% slower here (42 -> 48 ms, bert-base shape, 2 cores)."""

    def __init__(
        self,
        model: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        *,
        name: str,
        max_masks: int = DEFAULT_MAX_MASKS,
        max_input_chars: int = DEFAULT_MAX_INPUT_CHARS,
        model_thread: ThreadPoolExecutor | None = None,
        cuda_graphs: bool | None = None,
        max_batch_size: int = 32,
        max_batch_tokens: int = 16_384,
    ) -> None:
        if tokenizer.mask_token is None or tokenizer.mask_token_id is None:
            raise ValueError(f"{name} has no mask token: it is not a masked language model")
        if max_masks < 1:
            raise ValueError("max_masks must be at least 1")
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.name = name
        self.max_masks = max_masks
        self.max_input_chars = max_input_chars
        self.device = next(model.parameters()).device
        self.dtype = next(model.parameters()).dtype
        self.mask_token: str = tokenizer.mask_token
        self.mask_token_id: int = tokenizer.mask_token_id
        self.pad_token_id: int = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        self.unk_token_id: int | None = tokenizer.unk_token_id
        self.max_length = _max_sequence_length(model, tokenizer)
        self._prefix_len, self._suffix_len = _special_frame(tokenizer)
        if self.max_length <= self._prefix_len + self._suffix_len:
            raise ValueError(f"{name}: max length {self.max_length} leaves no room for text")
        self._alias_re = re.compile(f"{MASK_ALIASES}|{re.escape(self.mask_token)}", re.IGNORECASE)
        self._vocab: dict[str, int] = tokenizer.get_vocab()
        self.vocab_size = int(model.get_output_embeddings().weight.shape[0])
        # Special tokens other than the mask are dropped from multi-mask sequences; the pipeline keeps them.
        self._frame_ids = frozenset(set(tokenizer.all_special_ids) - {self.mask_token_id})
        self._suppressed = self._words_only_suppression()
        self._encoder: nn.Module = model.base_model
        self._head: HeadFn | None = _mlm_head(model)
        # CUDA graphs of the encoder, built at warm-up: True asks for them, None (auto) uses them on CUDA, False
        # never; _graphed stays None (eager) when they cannot be used.
        self.cuda_graphs_requested = cuda_graphs
        self.max_batch_size = max_batch_size
        self.max_batch_tokens = max_batch_tokens
        self._graphed: GraphedEncoder | None = None
        self.model_thread = model_thread or ThreadPoolExecutor(max_workers=1, thread_name_prefix="mlm-model")
        self._target_ids = lru_cache(maxsize=1024)(self._resolve_targets)
        self.token_str: Callable[[int], str] = lru_cache(maxsize=65536)(self._decode_token)
        self._decoder = Decoder(tokenizer)

    # ------------------------------------------------------------------ loading
    @classmethod
    def load(
        cls,
        name_or_path: str | Path,
        *,
        device: str | None = None,
        dtype: str | None = None,
        max_masks: int = DEFAULT_MAX_MASKS,
        max_input_chars: int = DEFAULT_MAX_INPUT_CHARS,
        warm_up: bool = True,
        cuda_graphs: bool | None = None,
        max_batch_size: int = 32,
        max_batch_tokens: int = 16_384,
    ) -> FillMaskEngine:
        """Load any HF masked LM by hub id or local directory (the same ``from_pretrained`` path for both),
        on the model thread that will run it."""
        torch_device = resolve_device(device)
        torch_dtype = resolve_dtype(dtype, torch_device)
        name = str(name_or_path)
        thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="mlm-model")

        def build() -> FillMaskEngine:
            source = resolve_source(name)  # fails at once, in one line, where transformers would retry for a minute
            log.info("loading %s on %s (%s)", name, torch_device, torch_dtype)
            try:
                tokenizer = AutoTokenizer.from_pretrained(source.name, local_files_only=source.local_files_only)
                model = AutoModelForMaskedLM.from_pretrained(
                    source.name, dtype=torch_dtype, local_files_only=source.local_files_only
                )
            except OSError as exc:  # what transformers raises for missing files, unknown ids, an unreachable hub
                raise explain(name, exc) from exc
            model.to(torch_device)
            engine = cls(
                model,
                tokenizer,
                name=name,
                max_masks=max_masks,
                max_input_chars=max_input_chars,
                model_thread=thread,
                cuda_graphs=cuda_graphs,
                max_batch_size=max_batch_size,
                max_batch_tokens=max_batch_tokens,
            )
            if warm_up:
                engine._warm_up()
            return engine

        try:
            return thread.submit(build).result()
        except BaseException:
            thread.shutdown(wait=False)
            raise

    @property
    def graphs_active(self) -> bool:
        """Whether forwards replay CUDA graphs (asked for, and captured and checked at warm-up)."""
        return self._graphed is not None

    def warm_up(self) -> None:
        self.model_thread.submit(self._warm_up).result()

    def run_forward(self, batch: Sequence[EncodedInput]) -> list[MaskScores]:
        """``forward`` on the model thread, waiting for it (for synchronous callers)."""
        return self.model_thread.submit(self.forward, batch).result()

    def _warm_up(self) -> None:
        """Run the probe sentence once, and check that the head-at-masks path gives the full model's logits;
        if an architecture's head cannot be split off that way, fall back to the full model (slower, correct)."""
        encoded = self.prepare(FillMaskRequest(PROBE_TEXT.format(mask=self.mask_token)))
        ids, attention, rows, cols = self._tensors([encoded])
        with torch.inference_mode():
            full = self.model(input_ids=ids, attention_mask=attention).logits[rows, cols].float().softmax(-1)
            if self._head is not None:
                hidden = self._encoder(input_ids=ids, attention_mask=attention)[0]
                split = self._head(hidden[rows, cols]).float().softmax(-1)
                # Compared as probabilities: bounded, so one tolerance fits fp32 and bf16 alike.
                tolerance = 1e-4 if self.dtype == torch.float32 else 2e-2
                if split.shape != full.shape or (split - full).abs().max().item() > tolerance:
                    log.warning("%s: the MLM head cannot run at mask positions only; using full logits", self.name)
                    self._head = None
        wanted = self.cuda_graphs_requested
        if wanted is None:  # auto: on a CUDA device with a split head, silently eager elsewhere
            wanted = self.device.type == "cuda" and self._head is not None
        if wanted and self._graphed is None:
            self._graphed = self._build_graphs(encoded)
        self.forward([encoded])
        log.info(
            "%s ready: head at masks only=%s, CUDA graphs=%s, max length %d",
            self.name,
            self._head is not None,
            self._graphed is not None,
            self.max_length,
        )

    @torch.inference_mode()
    def _build_graphs(self, probe: EncodedInput) -> GraphedEncoder | None:
        """Capture the encoder's CUDA graphs, then check one replay against the eager encoder; anything that
        goes wrong (no CUDA, an architecture that cannot be captured, a mismatch) leaves the engine eager."""
        if self.device.type != "cuda" or self._head is None:
            log.warning("CUDA graphs need a CUDA device and a split MLM head; running eagerly")
            return None
        graphed = GraphedEncoder(
            lambda ids, attention: self._encoder(input_ids=ids, attention_mask=attention)[0],
            device=self.device,
            pad_token_id=self.pad_token_id,
            max_length=self.max_length,
            max_batch=self.max_batch_size,
            max_tokens=self.max_batch_tokens,
        )
        try:
            seconds = graphed.build()
            ids, attention, rows, cols = self._tensors([probe])
            eager = self._encoder(input_ids=ids, attention_mask=attention)[0][rows, cols].float()
            replayed = graphed(ids, attention)
            tolerance = 1e-3 if self.dtype == torch.float32 else 5e-2
            if replayed is None or (replayed[rows, cols].float() - eager).abs().max().item() > tolerance * (
                1 + eager.abs().max().item()
            ):
                raise RuntimeError("a replayed graph does not reproduce the eager encoder")
        except Exception:
            log.warning("%s: CUDA graphs could not be used; running eagerly", self.name, exc_info=True)
            del graphed
            torch.cuda.empty_cache()
            return None
        log.info("%s: captured %d CUDA graphs in %.1f s", self.name, len(graphed.buckets), seconds)
        return graphed

    # --------------------------------------------------------------- preprocess
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
        prefix, suffix = self._prefix_len, self._suffix_len
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

    def _words_only_suppression(self) -> torch.Tensor:
        """Token ids a chat user never wants as "the word": special tokens and WordPiece continuations."""
        suppressed = set(self.tokenizer.all_special_ids)
        suppressed.update(i for token, i in self._vocab.items() if token.startswith("##"))
        ids = sorted(i for i in suppressed if 0 <= i < self.vocab_size)
        return torch.tensor(ids, dtype=torch.long, device=self.device)

    # ------------------------------------------------------------------ forward
    def _tensors(self, batch: Sequence[EncodedInput]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Input ids, attention mask and the mask rows/columns, packed in one (pinned, on CUDA) host buffer and
        sent to the device in one non-blocking copy."""
        n, width = len(batch), max(len(e) for e in batch)
        masks = sum(len(e.mask_positions) for e in batch)
        cells = n * width
        host = torch.empty(2 * cells + 2 * masks, dtype=torch.long, pin_memory=self.device.type == "cuda")
        buf = host.numpy()
        ids, attention = buf[:cells].reshape(n, width), buf[cells : 2 * cells].reshape(n, width)
        rows, cols = buf[2 * cells : 2 * cells + masks], buf[2 * cells + masks :]
        ids.fill(self.pad_token_id)
        attention.fill(0)
        k = 0
        for i, e in enumerate(batch):
            ids[i, : len(e)] = e.input_ids
            attention[i, : len(e)] = 1
            rows[k : k + len(e.mask_positions)] = i
            cols[k : k + len(e.mask_positions)] = e.mask_positions
            k += len(e.mask_positions)
        dev = host.to(self.device, non_blocking=True)
        return (
            dev[:cells].view(n, width),
            dev[cells : 2 * cells].view(n, width),
            dev[2 * cells : 2 * cells + masks],
            dev[2 * cells + masks :],
        )

    @torch.inference_mode()
    def forward(self, batch: Sequence[EncodedInput]) -> list[MaskScores]:
        """One padded batch through the model; returns each input's top-k per mask. Call on the model thread
        (``run_forward`` does that for synchronous callers)."""
        ids, attention, rows, cols = self._tensors(batch)
        if self._head is not None:
            hidden = self._graphed(ids, attention) if self._graphed is not None else None
            if hidden is None:
                hidden = self._encoder(input_ids=ids, attention_mask=attention)[0]
            logits = self._head(hidden[rows, cols])
        else:
            logits = self.model(input_ids=ids, attention_mask=attention).logits[rows, cols]
        probs = logits.float().softmax(dim=-1)
        return self._top_k(batch, probs)

    def _top_k(self, batch: Sequence[EncodedInput], probs: torch.Tensor) -> list[MaskScores]:
        owners = [i for i, e in enumerate(batch) for _ in e.mask_positions]
        words_only_rows = [r for r, i in enumerate(owners) if batch[i].words_only]
        if len(words_only_rows) == len(owners) and len(self._suppressed):
            probs[:, self._suppressed] = 0.0  # the common case (the bot): no row index to build and copy
        elif words_only_rows and len(self._suppressed):
            index = torch.tensor(words_only_rows, device=probs.device)
            probs[index.unsqueeze(1), self._suppressed.unsqueeze(0)] = 0.0
        free_rows = [r for r, i in enumerate(owners) if batch[i].target_ids is None]
        per_row: dict[int, tuple[list[float], list[int]]] = {}
        if free_rows:
            k = max(batch[owners[r]].top_k for r in free_rows)
            free = probs if len(free_rows) == len(owners) else probs[torch.tensor(free_rows, device=probs.device)]
            values, indices = free.topk(k, dim=-1)
            for r, v, t in zip(free_rows, values.tolist(), indices.tolist(), strict=False):
                per_row[r] = (v, t)
        for r, i in enumerate(owners):
            target_ids = batch[i].target_ids
            if target_ids is None:
                continue
            candidates = torch.tensor(target_ids, device=probs.device)
            values, indices = probs[r, candidates].topk(min(batch[i].top_k, len(target_ids)))
            per_row[r] = (values.tolist(), [target_ids[j] for j in indices.tolist()])
        results: list[MaskScores] = []
        row = 0
        for e in batch:
            scores, tokens = [], []
            for _ in e.mask_positions:
                v, t = per_row[row]
                scores.append(tuple(v[: e.top_k]))
                tokens.append(tuple(t[: e.top_k]))
                row += 1
            results.append(MaskScores(scores=tuple(scores), token_ids=tuple(tokens)))
        return results

    # -------------------------------------------------------------- postprocess
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

    # ------------------------------------------------------------ conveniences
    def fill(
        self, text: str, *, top_k: int = 5, targets: Sequence[str] | None = None, words_only: bool = False
    ) -> FillMaskResult:
        """One request, synchronously (CLI, tests). Servers go through the batcher instead."""
        request = FillMaskRequest(text, top_k, tuple(targets) if targets is not None else None, words_only)
        encoded = self.prepare(request)
        return self.postprocess([encoded], self.run_forward([encoded]))[0]

    def fill_joint(self, text: str, *, targets: Sequence[str] | None = None, words_only: bool = False) -> JointFill:
        request = FillMaskRequest(text, 1, tuple(targets) if targets is not None else None, words_only)
        return run_joint_fill(self, self.prepare(request), lambda e: self.run_forward([e])[0])


def run_joint_fill(
    engine: FillMaskEngine, encoded: EncodedInput, forward_one: Callable[[EncodedInput], MaskScores]
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

    def __init__(self, engine: FillMaskEngine, encoded: EncodedInput) -> None:
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


def _check_top_k(top_k: object) -> None:
    if isinstance(top_k, bool) or not isinstance(top_k, int) or not 1 <= top_k <= MAX_TOP_K:
        raise InvalidParameterError(f"top_k must be a whole number from 1 to {MAX_TOP_K}; got {top_k!r}.")


def _mlm_head(model: PreTrainedModel) -> HeadFn | None:
    """The module that turns hidden states into vocabulary logits, so it can run at mask positions only.

    Most HF masked LMs hold exactly two children, the encoder and the head (BERT ``cls``, RoBERTa ``lm_head``,
    ALBERT ``predictions``); DistilBERT spells its head out in four modules. Anything else returns None and
    the engine uses full logits (``warm_up`` double-checks whichever is chosen)."""
    if model.config.model_type == "distilbert":
        m = model
        return lambda h: m.vocab_projector(m.vocab_layer_norm(m.activation(m.vocab_transform(h))))
    base = model.base_model
    children = [
        child
        for child in model.children()
        if child is not base and not isinstance(child, nn.modules.loss._Loss) and any(True for _ in child.parameters())
    ]
    return children[0] if len(children) == 1 else None


def _max_sequence_length(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> int:
    """Tokens the model can read: the position table (less RoBERTa's padding offset) and the tokenizer's own
    limit, whichever is smaller."""
    config = model.config
    limits = []
    positions = getattr(config, "max_position_embeddings", None)
    if positions:
        if "roberta" in config.model_type or config.model_type in ("camembert", "longformer"):
            positions -= (config.pad_token_id or 0) + 1
        limits.append(positions)
    if tokenizer.model_max_length and tokenizer.model_max_length < 1_000_000:
        limits.append(int(tokenizer.model_max_length))
    return min(limits) if limits else 512


def _special_frame(tokenizer: PreTrainedTokenizerBase) -> tuple[int, int]:
    """How many special tokens the tokenizer puts before and after a single text ([CLS] .. [SEP] -> 1, 1)."""
    plain = tokenizer("a", add_special_tokens=False)["input_ids"]
    framed = tokenizer("a", add_special_tokens=True)["input_ids"]
    for start in range(len(framed) - len(plain) + 1):
        if framed[start : start + len(plain)] == plain:
            return start, len(framed) - start - len(plain)
    total = tokenizer.num_special_tokens_to_add(pair=False)
    return min(1, total), total - min(1, total)
