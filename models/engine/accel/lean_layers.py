"""CPU: BERT-style encoder layers without transformers' per-module Python (``LeanLayer``).

One sentence at a time, bert-base's forward spends about as long in the Python around its ops (eleven modules
a layer, each call checking hooks, the attention interface looked up, shapes rebuilt) as in the attention,
GELU and layer norms themselves. A ``LeanLayer`` is the same arithmetic in one function: the three projections
as one fused linear layer once the layers are packed or quantized (in int8, one quantization of the input instead
of three; packed, erf's GELU inside the intermediate product: ``fuse_gelu``), the attention through
``scaled_dot_product_attention`` with the padding mask, the two residual layer norms. Measured on bert-base's
shape, one sentence through the engine (2-core Xeon): int8 20 -> 16 ms, packed fp32 36 -> 32 ms. A
``LeanEncoder`` then runs the embeddings and the lean layers without transformers' ``BertModel.forward`` around
them (fp32 21.0 -> 20.3 ms with the fused GELU, int8 8.82 -> 8.65 ms; 2-core AMD EPYC, docs/engine.md).

Only layers whose structure is known are replaced: BERT's (and RoBERTa's, ELECTRA's: the same modules) with
absolute positions, no cross-attention and no chunked feed-forward. The engine checks the lean layers and the lean
encoder against the original on the probe and keeps the original on any difference (``Forwarder.make_lean``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn
from transformers.activations import GELUActivation

from models.engine.accel.packed_linear import Swapped, unpack

log = logging.getLogger(__name__)


class LeanLayer(nn.Module):
    """A BERT layer's forward in one function; inference only. Its query, key and value projections run as three
    layers until ``fuse_projections`` makes them one (when the layers are packed or quantized: the fused fp32
    weight then exists only while it is converted, one layer at a time, never all twelve at once)."""

    def __init__(self, layer: nn.Module) -> None:
        super().__init__()
        attention = layer.attention.self
        self.query, self.key, self.value = attention.query, attention.key, attention.value
        self.qkv: nn.Module | None = None
        self.heads = int(attention.num_attention_heads)
        self.head_size = int(attention.attention_head_size)
        self.scaling = float(attention.scaling)
        self.attention_out = layer.attention.output.dense
        self.attention_norm = layer.attention.output.LayerNorm
        self.intermediate = layer.intermediate.dense
        self.act = layer.intermediate.intermediate_act_fn
        self.out = layer.output.dense
        self.out_norm = layer.output.LayerNorm

    def forward(self, hidden: torch.Tensor, attention_mask: torch.Tensor | None = None, *_: object, **__: object):
        batch, length, width = hidden.shape
        if self.qkv is not None:
            qkv = self.qkv(hidden)
        else:
            qkv = torch.cat([self.query(hidden), self.key(hidden), self.value(hidden)], dim=-1)
        qkv = qkv.view(batch, length, 3, self.heads, self.head_size).permute(2, 0, 3, 1, 4)
        mask = attention_mask
        if mask is not None and mask.dtype not in (torch.bool, qkv.dtype):
            mask = mask.to(qkv.dtype)
        context = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2], attn_mask=mask, scale=self.scaling)
        context = context.transpose(1, 2).reshape(batch, length, width)
        norm = self.attention_norm
        hidden = F.layer_norm(
            self.attention_out(context) + hidden, norm.normalized_shape, norm.weight, norm.bias, norm.eps
        )
        norm = self.out_norm
        inner = self.intermediate(hidden)
        if self.act is not None:  # None: the packed intermediate product applies it (``fuse_gelu``)
            inner = self.act(inner)
        return F.layer_norm(self.out(inner) + hidden, norm.normalized_shape, norm.weight, norm.bias, norm.eps)


def fuse_projections(module: nn.Module, make: Callable[[nn.Linear], nn.Module]) -> Swapped:
    """Each ``LeanLayer`` under ``module`` gets its query, key and value as one layer, ``make(fused)`` (a packed or
    int8 layer: one product, one quantization of the input); the three fp32 layers leave it. Returns what was
    replaced, for ``packed_linear.unpack``; on an error, puts back what it had replaced and raises."""
    swapped: Swapped = []
    try:
        for layer in [m for m in module.modules() if isinstance(m, LeanLayer) and m.qkv is None]:
            q, k, v = layer.query, layer.key, layer.value
            fused = nn.Linear(q.in_features, 3 * q.out_features, device=q.weight.device, dtype=q.weight.dtype)
            with torch.no_grad():
                fused.weight.copy_(torch.cat([q.weight, k.weight, v.weight]))
                fused.bias.copy_(torch.cat([q.bias, k.bias, v.bias]))
            made = make(fused)
            del fused  # the fp32 copy lives only while it is converted
            swapped.append((layer, "qkv", None))  # type: ignore[arg-type]  # unpack sets it back to None
            layer.qkv = made
            for name in ("query", "key", "value"):
                swapped.append((layer, name, getattr(layer, name)))
                setattr(layer, name, None)
    except BaseException:
        unpack(swapped)
        raise
    return swapped


def exact_gelu(act: object) -> bool:
    """Whether ``act`` is erf's GELU as transformers spells it (``GELUActivation`` around ``F.gelu``: BERT's)."""
    return isinstance(act, GELUActivation) and act.act is F.gelu


def fuse_gelu(module: nn.Module, make: Callable[[nn.Linear], nn.Module]) -> Swapped:
    """Each ``LeanLayer`` under ``module`` whose activation is erf's GELU gets its intermediate layer as
    ``make(linear)``, a layer that applies the GELU itself (``PackedLinear(linear, gelu=True)``), and no activation
    of its own. Returns what was replaced, for ``packed_linear.unpack``."""
    swapped: Swapped = []
    try:
        for layer in [m for m in module.modules() if isinstance(m, LeanLayer)]:
            if not exact_gelu(layer.act) or type(layer.intermediate) is not nn.Linear:
                continue
            made = make(layer.intermediate)
            swapped += [(layer, "intermediate", layer.intermediate), (layer, "act", layer.act)]
            layer.intermediate, layer.act = made, None
    except BaseException:
        unpack(swapped)
        raise
    return swapped


def fused_then_swapped(
    module: nn.Module,
    swap: Callable[[nn.Module], Swapped],
    make: Callable[[nn.Linear], nn.Module],
    make_with_gelu: Callable[[nn.Linear], nn.Module] | None = None,
) -> Swapped:
    """``fuse_projections(module, make)``, ``fuse_gelu(module, make_with_gelu)`` when given, then ``swap(module)``
    for every other linear layer (``pack_linears``, ``quantize_linears``); on an error, puts everything back and
    raises."""
    swapped = fuse_projections(module, make)
    try:
        if make_with_gelu is not None:
            swapped += fuse_gelu(module, make_with_gelu)
        return swapped + swap(module)
    except BaseException:
        unpack(swapped)
        raise


def leanable(layer: nn.Module) -> bool:
    """A layer whose every part ``LeanLayer`` knows: BERT's modules, bidirectional, absolute positions."""
    try:
        attention = layer.attention.self
        parts = (attention.query, attention.key, attention.value, layer.attention.output.dense,
                 layer.intermediate.dense, layer.output.dense)  # fmt: skip
        return (
            all(type(p) is nn.Linear and p.bias is not None for p in parts)
            and isinstance(layer.attention.output.LayerNorm, nn.LayerNorm)
            and isinstance(layer.output.LayerNorm, nn.LayerNorm)
            and not getattr(layer, "is_decoder", False)
            and not hasattr(layer, "crossattention")
            and getattr(attention, "position_embedding_type", "absolute") == "absolute"
            and not getattr(layer, "chunk_size_feed_forward", 0)
            and callable(layer.intermediate.intermediate_act_fn)
        )
    except AttributeError:
        return False


def make_lean(encoder: nn.Module) -> Swapped:
    """Replace each known layer of ``encoder`` (its ``encoder.layer`` list) by a ``LeanLayer``; returns what was
    replaced, for ``packed_linear.unpack``. Nothing is replaced unless every layer is known."""
    layers = getattr(getattr(encoder, "encoder", None), "layer", None)
    if not isinstance(layers, nn.ModuleList) or not len(layers) or not all(leanable(layer) for layer in layers):
        return []
    swapped: Swapped = []
    for i, layer in enumerate(list(layers)):
        layers[i] = LeanLayer(layer)
        swapped.append((layers, str(i), layer))
    return swapped


def lean_if_same(encoder: nn.Module, run: Callable[[], torch.Tensor], tolerance: float) -> int:
    """``make_lean``, kept only if ``run()`` (the encoder on the probe) gives what it gave before, within
    ``tolerance`` relative to its largest value; any error or difference puts the original layers back (with a
    warning). Returns how many layers are lean."""
    with torch.inference_mode():
        before = run()
        swapped: Swapped = []
        try:
            swapped = make_lean(encoder)
            if swapped:
                after = run()
                if not (after - before).abs().max().item() <= tolerance * (1 + before.abs().max().item()):
                    raise RuntimeError("the lean layers do not reproduce the model's own")
        except Exception:
            unpack(swapped)
            log.warning("the model's own layers kept (lean layers could not be used)", exc_info=True)
            return 0
    return len(swapped)


class LeanEncoder:
    """A base model whose layers are all ``LeanLayer``s, run without transformers' forward around them: the
    embeddings, then each layer with SDPA's own padding mask (none when no input is padded), the last hidden state
    out. ``BertModel``'s forward (the mask built through transformers' masking utilities, caches, output classes)
    took 0.5-1 ms of a sentence's 9-25 on bert-base, CPU. A plain object, not a module: it holds the base model,
    whose layers it reads at each call, so the swaps made after it (packed, int8) are the ones it runs."""

    def __init__(self, base: nn.Module) -> None:
        self.base = base

    def __call__(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        hidden = self.base.embeddings(input_ids=input_ids)
        mask = None if bool(attention_mask.all()) else attention_mask[:, None, None, :].bool()
        for layer in self.base.encoder.layer:
            hidden = layer(hidden, mask)
        return hidden


def lean_encoder_if_same(base: nn.Module, ids: torch.Tensor, attention: torch.Tensor, pad_id: int, tolerance: float):
    """A ``LeanEncoder`` of ``base`` if its every layer is lean, it holds nothing but the embeddings, the encoder
    and a pooler (which the engine never needs: ELECTRA's projection of its embeddings, say, keeps the model's own
    forward), and it gives the model's own hidden states on the probe (``ids``, ``attention``), alone and padded
    with three pad tokens; else None."""
    layers = getattr(getattr(base, "encoder", None), "layer", None)
    if {name for name, _ in base.named_children()} - {"embeddings", "encoder", "pooler"} or not layers:
        return None
    if not all(isinstance(layer, LeanLayer) for layer in layers):
        return None
    lean = LeanEncoder(base)
    with torch.inference_mode():
        try:
            before = base(input_ids=ids, attention_mask=attention)[0].float()
            padded = lean(F.pad(ids, (0, 3), value=pad_id), F.pad(attention, (0, 3)))[:, : ids.shape[1]].float()
            limit = tolerance * (1 + before.abs().max().item())
            for after in (lean(ids, attention).float(), padded):
                if not (after - before).abs().max().item() <= limit:
                    raise RuntimeError("the lean encoder does not reproduce the model's own")
        except Exception:
            log.warning("the model's own forward kept around its lean layers", exc_info=True)
            return None
    return lean
