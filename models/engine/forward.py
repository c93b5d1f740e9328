"""Step 2 of the engine, on the one model thread: token ids to the top candidates at each mask.

Pad the batch (into one pinned host buffer, one copy to the device), run the encoder (or replay its CUDA graph),
gather the hidden states at the mask positions and apply the MLM head there only (the pipeline projects every
position onto the whole vocabulary), softmax, top-k, one transfer back.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Sequence

import torch
from torch import nn
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from models.engine.accel import int8_linear, lean_layers, split_decoder
from models.engine.accel.cuda_graphs import GraphedEncoder
from models.engine.accel.int8_linear import Int8Decoder, Int8Linear
from models.engine.accel.packed_linear import PackedLinear, pack_linears, unpack
from models.engine.head import HeadFn, mlm_head
from models.engine.memory import own_tensors
from models.engine.onnx_model import OnnxMaskLogits
from models.engine.results import EncodedInput, MaskScores

log = logging.getLogger(__name__)


class Forwarder:
    """The engine's middle step: ``EncodedInput`` batches through the model, on the engine's one model thread.

    Holds what runs the model: the encoder, the MLM head split off to run at mask positions only (``head``; None
    when the architecture's head cannot be split, then the full model runs), and the accelerations set up at warm-up
    (``graphed``: CUDA graphs of the encoder; ``packed_layers``: oneDNN-packed linear layers on CPU;
    ``decoder_slices``: the fp32 MLM decoder's product split across the CPU's threads)."""

    def __init__(
        self,
        model: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        vocab: dict[str, int],
        *,
        name: str,
        max_length: int,
        max_batch_size: int,
        max_batch_tokens: int,
        onnx: OnnxMaskLogits | None = None,
    ) -> None:
        self.model = model
        self.name = name
        self.onnx = onnx  # MODEL_RUNTIME=onnxruntime: ONNX Runtime runs the model (on CPU), whose weights stay on meta
        self.device = torch.device("cpu") if onnx is not None else next(model.parameters()).device
        self.dtype = next(model.parameters()).dtype
        self.pad_token_id: int = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        self.max_length = max_length
        self.max_batch_size = max_batch_size
        self.max_batch_tokens = max_batch_tokens
        self.vocab_size = int(model.get_output_embeddings().weight.shape[0])
        self.encoder: nn.Module = model.base_model
        self.head: HeadFn | None = mlm_head(model)
        self.graphed: GraphedEncoder | None = None
        self.lean_encoder: lean_layers.LeanEncoder | None = None  # CPU: the encoder without transformers' forward
        self.packed_layers = self.int8_layers = self.lean_layers = self.decoder_slices = 0
        self.suppressed = _words_only_suppression(tokenizer, vocab, self.vocab_size, self.device)

    @torch.inference_mode()
    def check_head(self, probe: EncodedInput) -> None:
        """Check on the probe that the head at mask positions gives the full model's probabilities; if this
        architecture's head cannot be split off that way, fall back to the full model (slower, correct)."""
        if self.head is None:
            return
        ids, attention, rows, cols = self.tensors([probe])
        full = self.model(input_ids=ids, attention_mask=attention).logits[rows, cols].float().softmax(-1)
        hidden = self.encoder(input_ids=ids, attention_mask=attention)[0]
        split = self.head(hidden[rows, cols]).float().softmax(-1)
        # Compared as probabilities: bounded, so one tolerance fits fp32 and bf16 alike.
        tolerance = 1e-4 if self.dtype == torch.float32 else 2e-2
        if split.shape != full.shape or (split - full).abs().max().item() > tolerance:
            log.warning("%s: the MLM head cannot run at mask positions only; using full logits", self.name)
            self.head = None

    def make_lean(self, probe: EncodedInput) -> None:
        """CPU: the encoder's BERT layers as ``LeanLayer``s, kept if they reproduce the model's own on the probe."""
        ids, attention, _, _ = self.tensors([probe])
        run = lambda: self.encoder(input_ids=ids, attention_mask=attention)[0].float()  # noqa: E731
        tolerance = 1e-4 if self.dtype == torch.float32 else 5e-2
        self.lean_layers = lean_layers.lean_if_same(self.encoder, run, tolerance)
        if self.lean_layers:
            self.lean_encoder = lean_layers.lean_encoder_if_same(
                self.encoder, ids, attention, self.pad_token_id, tolerance
            )

    def pack_weights(self, probe: EncodedInput) -> None:
        """Pack the encoder's linear layers for oneDNN, then check the packed encoder against the eager one on
        the probe; anything that goes wrong (not a CPU, an op this torch or CPU lacks, a difference) puts the
        plain layers back. ``packed_layers`` says how many were packed."""
        if self.packed_layers:
            return
        if self.device.type != "cpu":
            log.warning("%s: packed weights are for CPU; %s keeps its plain layers", self.name, self.device)
            return
        ids, attention, _, _ = self.tensors([probe])
        with torch.inference_mode():
            eager = self.encoder(input_ids=ids, attention_mask=attention)[0].float()
            swapped = []
            try:
                gelu = functools.partial(PackedLinear, gelu=True)
                swapped = lean_layers.fused_then_swapped(self.encoder, pack_linears, PackedLinear, gelu)
                packed = self.encoder(input_ids=ids, attention_mask=attention)[0].float()
                tolerance = 1e-3 if self.dtype == torch.float32 else 5e-2
                if (packed - eager).abs().max().item() > tolerance * (1 + eager.abs().max().item()):
                    raise RuntimeError("the packed encoder does not reproduce the eager one")
            except Exception:
                unpack(swapped)
                log.warning("%s: packed weights could not be used; keeping plain layers", self.name, exc_info=True)
                return
        self.packed_layers = sum(isinstance(m, PackedLinear) for m in self.encoder.modules())
        own_tensors(self.model)  # the checkpoint's file can go: the packed copies replace most of it
        self.decoder_slices = split_decoder.split_if_same(self.model, lambda: self._mask_logits(probe))  # fp32 only

    def quantize_weights(self, probe: EncodedInput) -> None:
        """Give every linear layer of the model (encoder and head) int8 weights, then check the quantized model
        against the fp32 one at the probe's masks; an error or a model that no longer resembles itself (more than
        10% relative difference in the logits: int8 alone gives about 1%) puts fp32 back. ``int8_layers`` says how
        many were quantized."""
        if self.int8_layers or self.device.type != "cpu":
            return
        with torch.inference_mode():
            before = self._mask_logits(probe)
            swapped = []
            try:
                int8_linear.use_engine()
                swapped = int8_linear.quantize_vocabulary(self.model)  # before the decoder is an Int8Linear
                swapped += lean_layers.fused_then_swapped(self.model, int8_linear.quantize_linears, Int8Linear)
                after = self._mask_logits(probe)
                error = ((after - before).norm() / before.norm().clamp(min=1e-6)).item()
                if not error <= 0.1:
                    raise RuntimeError(f"the int8 model's logits are {error:.0%} off the fp32 model's")
            except Exception:
                unpack(swapped)
                log.warning("%s: int8 weights could not be used; running in fp32", self.name, exc_info=True)
                return
        self.int8_layers = sum(isinstance(m, (Int8Linear, Int8Decoder)) for m in self.model.modules())
        own_tensors(self.model)  # the checkpoint's file can go: the int8 copies replace most of it
        log.info(
            "%s: %d linear layers in int8 (logits within %.1f%% of fp32 on the probe)",
            self.name,
            self.int8_layers,
            100 * error,
        )

    def _mask_logits(self, probe: EncodedInput) -> torch.Tensor:
        ids, attention, rows, cols = self.tensors([probe])
        if self.head is not None:
            return self.head(self.encode(ids, attention)[rows, cols]).float()
        return self.model(input_ids=ids, attention_mask=attention).logits[rows, cols].float()

    def build_graphs(self, probe: EncodedInput) -> None:
        """Capture the encoder's CUDA graphs into ``graphed``, then check one replay against the eager encoder;
        anything that goes wrong (no CUDA, an architecture that cannot be captured, a mismatch) leaves it eager."""
        if self.graphed is None:
            self.graphed = self._captured_graphs(probe)

    @torch.inference_mode()
    def _captured_graphs(self, probe: EncodedInput) -> GraphedEncoder | None:
        if self.device.type != "cuda" or self.head is None:
            log.warning("CUDA graphs need a CUDA device and a split MLM head; running eagerly")
            return None
        graphed = GraphedEncoder(
            lambda ids, attention: self.encoder(input_ids=ids, attention_mask=attention)[0],
            device=self.device,
            pad_token_id=self.pad_token_id,
            max_length=self.max_length,
            max_batch=self.max_batch_size,
            max_tokens=self.max_batch_tokens,
        )
        try:
            seconds = graphed.build()
            ids, attention, rows, cols = self.tensors([probe])
            eager = self.encoder(input_ids=ids, attention_mask=attention)[0][rows, cols].float()
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

    def describe(self) -> str:
        """What runs the model, for the log line that says the engine is ready."""
        if self.onnx is not None:
            return f"ONNX Runtime ({self.onnx.precision}, {self.onnx.path})"
        return (
            f"torch: head at masks only={self.head is not None}, CUDA graphs={self.graphed is not None}, packed "
            f"linear layers={self.packed_layers}, int8 layers={self.int8_layers}, lean layers={self.lean_layers}, "
            f"decoder slices={self.decoder_slices}"
        )

    def encode(self, ids: torch.Tensor, attention: torch.Tensor) -> torch.Tensor:
        if self.lean_encoder is not None:
            return self.lean_encoder(ids, attention)
        return self.encoder(input_ids=ids, attention_mask=attention)[0]

    def tensors(self, batch: Sequence[EncodedInput]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
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
        ids_and_attention = dev[: 2 * cells].view(2, n, width)
        return ids_and_attention[0], ids_and_attention[1], dev[2 * cells : 2 * cells + masks], dev[2 * cells + masks :]

    @torch.inference_mode()
    def forward(self, batch: Sequence[EncodedInput]) -> list[MaskScores]:
        """One padded batch through the model; returns each input's top-k per mask. Call on the model thread
        (the engine's ``run_forward`` does that for synchronous callers)."""
        ids, attention, rows, cols = self.tensors(batch)
        if self.onnx is not None:
            logits = self.onnx(ids, attention, rows, cols)
        elif self.head is not None:
            hidden = self.graphed(ids, attention) if self.graphed is not None else None
            if hidden is None:
                hidden = self.encode(ids, attention)
            logits = self.head(hidden[rows, cols])
        else:
            logits = self.model(input_ids=ids, attention_mask=attention).logits[rows, cols]
        probs = logits.float().softmax(dim=-1)
        return self._top_k(batch, probs)

    def _top_k(self, batch: Sequence[EncodedInput], probs: torch.Tensor) -> list[MaskScores]:
        owners = [i for i, e in enumerate(batch) for _ in e.mask_positions]
        words_only_rows = [r for r, i in enumerate(owners) if batch[i].words_only]
        if len(words_only_rows) == len(owners) and len(self.suppressed):
            probs[:, self.suppressed] = 0.0  # the common case (the bot): no row index to build and copy
        elif words_only_rows and len(self.suppressed):
            index = torch.tensor(words_only_rows, device=probs.device)
            probs[index.unsqueeze(1), self.suppressed.unsqueeze(0)] = 0.0
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


def _words_only_suppression(
    tokenizer: PreTrainedTokenizerBase, vocab: dict[str, int], vocab_size: int, device: torch.device
) -> torch.Tensor:
    """Token ids a chat user never wants as "the word": special tokens and WordPiece continuations."""
    suppressed = set(tokenizer.all_special_ids)
    suppressed.update(i for token, i in vocab.items() if token.startswith("##"))
    ids = sorted(i for i in suppressed if 0 <= i < vocab_size)
    return torch.tensor(ids, dtype=torch.long, device=device)
