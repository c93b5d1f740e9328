"""The fill-mask engine: Hugging Face's fill-mask results, without the pipeline object on the hot path.

Shaped like an HF pipeline, as three steps the engine holds (one object and one module each), which can run on
different threads:

* ``Preparer`` (``models/engine/prepare.py``, any thread): mask aliases, validation, tokenization with the
  tokenizer's batch API, a window around the masks for long input, target resolution;
* ``Forwarder`` (``models/engine/forward.py``, the one model thread): pad, run the encoder, gather the hidden states at
  the mask positions, apply the MLM head there only, softmax, top-k; one host transfer per batch;
* ``Postprocessor`` (``models/engine/postprocess.py``, any thread): decode candidates and filled sentences exactly as
  the pipeline does.

This module loads the model and warms it up; ``fill`` and ``fill_joint`` (``models/engine/joint.py``) chain the
steps for one request; the batcher chains them for many.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch
from transformers import AutoModelForMaskedLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from models.engine import onnx_model
from models.engine.accel.packed_linear import packs_by_default
from models.engine.device import is_auto, resolve_placement, suggest_bf16, wants_int8
from models.engine.errors import FillMaskError
from models.engine.forward import Forwarder
from models.engine.joint import JointFillState, run_joint_fill
from models.engine.loading import explain, max_sequence_length, resolve_source
from models.engine.memory import model_bytes, return_freed_memory
from models.engine.onnx_model import OnnxMaskLogits
from models.engine.postprocess import Postprocessor
from models.engine.prepare import MASK_ALIASES, MAX_TOP_K, Preparer
from models.engine.results import EncodedInput, FillMaskRequest, FillMaskResult, JointFill, MaskScores
from models.engine.threads import torch_thread

__all__ = ["MASK_ALIASES", "MAX_TOP_K", "FillMaskEngine", "JointFillState", "run_joint_fill"]

log = logging.getLogger(__name__)

DEFAULT_MAX_MASKS = 5
DEFAULT_MAX_INPUT_CHARS = 20_000
PROBE_TEXT = "The cat sat on the {mask}."


class FillMaskEngine:
    """A masked LM and its tokenizer, ready to fill masks: three steps it holds (``preparer``, ``forwarder``,
    ``postprocessor``), each with its own state, and the one model thread that runs the forwards.

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
        int8: bool = False,
        max_batch_size: int = 32,
        max_batch_tokens: int = 16_384,
        onnx: OnnxMaskLogits | None = None,
    ) -> None:
        if tokenizer.mask_token is None or tokenizer.mask_token_id is None:
            raise ValueError(f"{name} has no mask token: it is not a masked language model")
        if max_masks < 1:
            raise ValueError("max_masks must be at least 1")
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.name = name
        self.max_masks = max_masks
        self.mask_token: str = tokenizer.mask_token
        self.mask_token_id: int = tokenizer.mask_token_id
        self.max_length = max_sequence_length(model, tokenizer)
        vocab = tokenizer.get_vocab()
        self.forwarder = Forwarder(
            model,
            tokenizer,
            vocab,
            name=name,
            max_length=self.max_length,
            max_batch_size=max_batch_size,
            max_batch_tokens=max_batch_tokens,
            onnx=onnx,
        )
        self.preparer = Preparer(
            tokenizer,
            vocab,
            max_masks=max_masks,
            max_input_chars=max_input_chars,
            max_length=self.max_length,
            vocab_size=self.forwarder.vocab_size,
        )
        if self.max_length <= self.preparer.prefix_len + self.preparer.suffix_len:
            raise ValueError(f"{name}: max length {self.max_length} leaves no room for text")
        self.postprocessor = Postprocessor(tokenizer)
        # Accelerations set up at warm-up. CUDA graphs of the encoder: True asks for them, None (auto) uses them on
        # CUDA, False never. oneDNN-packed linear layers (models/engine/accel/packed_linear.py): True asks for them,
        # None (auto) packs on the x86 CPUs measured, False never. Either stays off when it cannot be used.
        self.cuda_graphs_requested = cuda_graphs
        self.packed_weights_requested = packed_weights
        self.int8_requested = int8
        self.model_thread = model_thread or torch_thread()

    # ------------------------------------------------------- the steps, by name
    @property
    def device(self) -> torch.device:
        return self.forwarder.device

    @property
    def dtype(self) -> torch.dtype:
        return self.forwarder.dtype

    @property
    def vocab_size(self) -> int:
        return self.forwarder.vocab_size

    @property
    def packed_layers(self) -> int:
        return self.forwarder.packed_layers

    def memory_bytes(self) -> int:
        """What the model's weights take in memory, as it runs (``models/engine/memory.py``)."""
        return self.forwarder.onnx.nbytes() if self.forwarder.onnx is not None else model_bytes(self.model)

    @property
    def precision(self) -> str:
        """What the model computes in, as people say it: ``int8`` (its linear layers), ``float32``, ``bfloat16``."""
        if self.forwarder.onnx is not None:
            return self.forwarder.onnx.precision
        return "int8" if self.forwarder.int8_layers else str(self.dtype).removeprefix("torch.")

    def normalize(self, text: str) -> str:
        return self.preparer.normalize(text)

    def prepare(self, request: FillMaskRequest) -> EncodedInput:
        return self.preparer.prepare(request)

    def prepare_batch(self, requests: Sequence[FillMaskRequest]) -> list[EncodedInput | FillMaskError]:
        return self.preparer.prepare_batch(requests)

    def forward(self, batch: Sequence[EncodedInput]) -> list[MaskScores]:
        """One batch through the model; call on ``model_thread`` (``run_forward`` does that for synchronous
        callers)."""
        return self.forwarder.forward(batch)

    def postprocess(self, batch: Sequence[EncodedInput], outputs: Sequence[MaskScores]) -> list[FillMaskResult]:
        return self.postprocessor.postprocess(batch, outputs)

    def token_str(self, token_id: int) -> str:
        return self.postprocessor.token_str(token_id)

    def decode(self, ids: Sequence[int]) -> str:
        return self.postprocessor.decode(ids)

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
        runtime: str = "torch",
        onnx_cache: str | Path | None = None,
    ) -> FillMaskEngine:
        """Load any HF masked LM by hub id or local directory (the same ``from_pretrained`` path for both),
        on the model thread that will run it. ``runtime="onnxruntime"``: ONNX Runtime runs it, on CPU, in fp32 or
        int8 (``models/engine/onnx_model.py``), from an export kept in ``onnx_cache``."""
        torch_device, torch_dtype, on_ort = resolve_placement(device, dtype, runtime)
        int8 = wants_int8(dtype)
        name = str(name_or_path)
        # Loading and warm-up run on a thread of their own. On CPU the engine then runs on the process's one torch
        # thread, and the loading thread ends (and its OpenMP team with it: see _TorchThread); CUDA engines keep
        # theirs (graphs are captured and replayed on it).
        thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="mlm-model")

        def build() -> FillMaskEngine:
            source = resolve_source(name)  # fails at once, in one line, where transformers would retry for a minute
            log.info("loading %s on %s (%s, %s)", name, torch_device, "int8" if int8 else torch_dtype, runtime)
            onnx = None
            try:
                tokenizer = AutoTokenizer.from_pretrained(source.name, local_files_only=source.local_files_only)
                if on_ort:
                    model, onnx = onnx_model.load_model(source, int8, Path(onnx_cache or onnx_model.default_cache()))
                else:
                    model = AutoModelForMaskedLM.from_pretrained(
                        source.name, dtype=torch_dtype, local_files_only=source.local_files_only
                    )
            except OSError as exc:  # what transformers raises for missing files, unknown ids, an unreachable hub
                raise explain(name, exc) from exc
            if onnx is None:
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
                int8=int8,
                max_batch_size=max_batch_size,
                max_batch_tokens=max_batch_tokens,
                onnx=onnx,
            )
            if warm_up:
                engine._warm_up()
            return_freed_memory()
            if torch_device.type == "cpu" and torch_dtype == torch.float32 and is_auto(dtype) and not on_ort:
                suggest_bf16()  # not under ONNX Runtime: it runs fp32 or int8
            return engine

        try:
            engine = thread.submit(build).result()
        except BaseException:
            thread.shutdown(wait=False)
            raise
        if torch_device.type == "cpu":
            engine.model_thread = torch_thread()
            thread.shutdown(wait=True)
        return engine

    @property
    def graphs_active(self) -> bool:
        """Whether forwards replay CUDA graphs (asked for, and captured and checked at warm-up)."""
        return self.forwarder.graphed is not None

    def warm_up(self) -> None:
        self.model_thread.submit(self._warm_up).result()

    def run_forward(self, batch: Sequence[EncodedInput]) -> list[MaskScores]:
        """``forward`` on the model thread, waiting for it (for synchronous callers)."""
        return self.model_thread.submit(self.forward, batch).result()

    def _warm_up(self) -> None:
        """Run the probe sentence once, check that the head-at-masks path gives the full model's logits, and set up
        the accelerations asked for (each checked against the eager model, and left off if it differs)."""
        probe = self.prepare(FillMaskRequest(PROBE_TEXT.format(mask=self.mask_token)))
        forwarder = self.forwarder
        if forwarder.onnx is None:  # ONNX Runtime's graph was checked against torch's model when it was exported
            self._accelerate(probe)
        forwarder.forward([probe])
        log.info("%s ready: %s, max length %d", self.name, forwarder.describe(), self.max_length)

    def _accelerate(self, probe: EncodedInput) -> None:
        forwarder = self.forwarder
        forwarder.check_head(probe)
        pack = self.packed_weights_requested
        if pack is None:  # auto: on the CPUs measured, silently plain elsewhere
            pack = self.device.type == "cpu" and packs_by_default()
        if self.device.type == "cpu" and (pack or self.int8_requested):
            forwarder.make_lean(probe)  # before the linear layers are swapped: its fused layer is swapped too
        if self.int8_requested:
            forwarder.quantize_weights(probe)
        if pack:
            forwarder.pack_weights(probe)
        wanted = self.cuda_graphs_requested
        if wanted is None:  # auto: on a CUDA device with a split head, silently eager elsewhere
            wanted = self.device.type == "cuda" and forwarder.head is not None
        if wanted:
            forwarder.build_graphs(probe)

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
