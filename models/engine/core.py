"""The fill-mask engine: Hugging Face's fill-mask results, without the pipeline object on the hot path.

Shaped like an HF pipeline, as three steps that can run on different threads, one module each:

* ``prepare_batch`` (``models/engine/prepare.py``, any thread): mask aliases, validation, tokenization with the
  tokenizer's batch API, a window around the masks for long input, target resolution;
* ``forward`` (``models/engine/forward.py``, the one model thread): pad, run the encoder, gather the hidden states at
  the mask positions, apply the MLM head there only, softmax, top-k; one host transfer per batch;
* ``postprocess`` (``models/engine/postprocess.py``, any thread): decode candidates and filled sentences exactly as
  the pipeline does.

This module loads the model and warms it up; ``fill`` and ``fill_joint`` (``models/engine/joint.py``) chain the
steps for one request; the batcher chains them for many.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import cache, lru_cache
from pathlib import Path

import torch
from transformers import AutoModelForMaskedLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from models.engine.accel.cuda_graphs import GraphedEncoder
from models.engine.accel.packed_linear import pack_linears, packs_by_default, unpack
from models.engine.decoding import Decoder
from models.engine.device import cpu_bf16_instructions, is_auto, resolve_device, resolve_dtype
from models.engine.forward import ForwardStep, max_sequence_length, mlm_head
from models.engine.joint import JointFillState, run_joint_fill
from models.engine.loading import explain, resolve_source
from models.engine.postprocess import PostprocessStep
from models.engine.prepare import MASK_ALIASES, MAX_TOP_K, PrepareStep, special_frame
from models.engine.results import EncodedInput, FillMaskRequest, FillMaskResult, JointFill, MaskScores

__all__ = ["MASK_ALIASES", "MAX_TOP_K", "FillMaskEngine", "JointFillState", "run_joint_fill"]

log = logging.getLogger(__name__)

DEFAULT_MAX_MASKS = 5
DEFAULT_MAX_INPUT_CHARS = 20_000
PROBE_TEXT = "The cat sat on the {mask}."


@cache
def _suggest_bf16(instructions: str) -> None:
    """Once per process (the bot may load five models): the CPU could run them in bf16 at nearly twice the speed."""
    log.info(
        "this CPU has native bf16 (%s): MODEL_DTYPE=bfloat16 runs the model about 1.8 times as fast, with "
        "probabilities within about 0.02 of fp32 (fp32, the default, gives the pipeline's numbers)",
        instructions,
    )


class FillMaskEngine(PrepareStep, ForwardStep, PostprocessStep):
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
        packed_weights: bool | None = None,
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
        self.max_length = max_sequence_length(model, tokenizer)
        self._prefix_len, self._suffix_len = special_frame(tokenizer)
        if self.max_length <= self._prefix_len + self._suffix_len:
            raise ValueError(f"{name}: max length {self.max_length} leaves no room for text")
        self._alias_re = re.compile(f"{MASK_ALIASES}|{re.escape(self.mask_token)}", re.IGNORECASE)
        self._vocab: dict[str, int] = tokenizer.get_vocab()
        self.vocab_size = int(model.get_output_embeddings().weight.shape[0])
        # Special tokens other than the mask are dropped from multi-mask sequences; the pipeline keeps them.
        self._frame_ids = frozenset(set(tokenizer.all_special_ids) - {self.mask_token_id})
        self._suppressed = self._words_only_suppression()
        self._encoder = model.base_model
        self._head = mlm_head(model)
        # CUDA graphs of the encoder, built at warm-up: True asks for them, None (auto) uses them on CUDA, False
        # never; _graphed stays None (eager) when they cannot be used.
        self.cuda_graphs_requested = cuda_graphs
        self.max_batch_size = max_batch_size
        self.max_batch_tokens = max_batch_tokens
        self._graphed: GraphedEncoder | None = None
        # oneDNN-packed linear layers in the encoder, on CPU (models/engine/accel/packed_linear.py), set up at warm-up
        # like the graphs: True asks for them, None (auto) packs on the x86 CPUs measured, False never.
        self.packed_weights_requested = packed_weights
        self.packed_layers = 0
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
        packed_weights: bool | None = None,
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
                packed_weights=packed_weights,
                max_batch_size=max_batch_size,
                max_batch_tokens=max_batch_tokens,
            )
            if warm_up:
                engine._warm_up()
            if torch_device.type == "cpu" and torch_dtype == torch.float32 and is_auto(dtype):
                bf16 = cpu_bf16_instructions()
                if bf16:
                    _suggest_bf16(bf16)
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
        pack = self.packed_weights_requested
        if pack is None:  # auto: on the CPUs measured, silently plain elsewhere
            pack = self.device.type == "cpu" and packs_by_default()
        if pack and not self.packed_layers:
            self.packed_layers = self._pack_weights(encoded)
        wanted = self.cuda_graphs_requested
        if wanted is None:  # auto: on a CUDA device with a split head, silently eager elsewhere
            wanted = self.device.type == "cuda" and self._head is not None
        if wanted and self._graphed is None:
            self._graphed = self._build_graphs(encoded)
        self.forward([encoded])
        log.info(
            "%s ready: head at masks only=%s, CUDA graphs=%s, packed linear layers=%d, max length %d",
            self.name,
            self._head is not None,
            self._graphed is not None,
            self.packed_layers,
            self.max_length,
        )

    def _pack_weights(self, probe: EncodedInput) -> int:
        """Pack the encoder's linear layers for oneDNN, then check the packed encoder against the eager one on
        the probe; anything that goes wrong (not a CPU, an op this torch or CPU lacks, a difference) puts the
        plain layers back. Returns how many layers were packed."""
        if self.device.type != "cpu":
            log.warning("%s: packed weights are for CPU; %s keeps its plain layers", self.name, self.device)
            return 0
        ids, attention, _, _ = self._tensors([probe])
        with torch.inference_mode():
            eager = self._encoder(input_ids=ids, attention_mask=attention)[0].float()
            swapped = []
            try:
                swapped = pack_linears(self._encoder)
                packed = self._encoder(input_ids=ids, attention_mask=attention)[0].float()
                tolerance = 1e-3 if self.dtype == torch.float32 else 5e-2
                if (packed - eager).abs().max().item() > tolerance * (1 + eager.abs().max().item()):
                    raise RuntimeError("the packed encoder does not reproduce the eager one")
            except Exception:
                unpack(swapped)
                log.warning("%s: packed weights could not be used; keeping plain layers", self.name, exc_info=True)
                return 0
        return len(swapped)

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
