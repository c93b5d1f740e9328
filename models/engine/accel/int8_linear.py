"""CPU: the model's linear layers with int8 weights (``MODEL_DTYPE=int8``).

Dynamic quantization, as ONNX Runtime's ``quantize_dynamic`` does it: each weight is stored once as int8 with one
scale per output row (per channel: a row of small weights keeps its own precision), and each product quantizes
its input on the fly (one scale per call), multiplies in int8 and returns fp32. Everything else (attention, layer
norms, softmax) stays fp32.

The vocabulary matrix (30,522 x 768 in bert-base: a fifth of the model) is both the input embeddings and, tied, the
MLM head's decoder. It is stored once, in int8 with one scale per word (``Int8Words``): looked up row by row on the
way in (``Int8Embedding``) and multiplied with ``torch._int_mm`` on the way out (``Int8Decoder``). Measured on
bert-base's shape: 22 MB instead of 94 MB of fp32 embeddings plus twice 22 MB of a packed decoder (oneDNN keeps the
quantized weight beside its packed copy), for about 0.3 ms more per sentence (1.0 against 0.7 ms for one mask).

It runs on oneDNN's int8 kernels (``torch.backends.quantized.engine = "onednn"``): on the CPUs measured they were
the fastest of torch's three engines (2-core Xeon with AMX, bert-base shape, one sentence / 32: fbgemm 16 / 102 ms,
x86 18 / 111 ms, onednn 13 / 68 ms; fp32 with packed weights 40 / 282 ms). The weights are a quarter of fp32's,
which is most of the speed at one sentence: there the model is bound by reading its weights from memory.

The ops are torch's own (``quantized::linear_prepack``, ``quantized::linear_dynamic``), which torch marks as
deprecated in favour of torchao; so, as with the packed layers, the engine quantizes at warm-up, checks the model
against the fp32 one on the probe sentence and keeps fp32 on any error (``Forwarder.quantize_weights``).
"""

from __future__ import annotations

import warnings

import torch
from torch import nn

from models.engine.accel.packed_linear import Swapped, bucket_rows, swap_linears

ENGINE = "onednn"


def available() -> bool:
    return ENGINE in torch.backends.quantized.supported_engines and hasattr(torch.ops.quantized, "linear_dynamic")


class Int8Linear(nn.Module):
    """``nn.Linear``'s forward with an int8 weight (one scale per output row) and an fp32 bias; inference only.

    The prepacked weight is an opaque object of the quantized engine, kept as a plain attribute (invisible to
    ``state_dict`` and ``.to()``)."""

    def __init__(self, linear: nn.Linear) -> None:
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        weight = linear.weight.detach().float()
        scales = (weight.abs().amax(dim=1) / 127.0).clamp(min=1e-8).double()
        zero_points = torch.zeros(weight.shape[0], dtype=torch.long)
        bias = None if linear.bias is None else linear.bias.detach().float().clone()  # not a view of the checkpoint
        with warnings.catch_warnings():  # torch's deprecation notice of quantized tensors, once per layer
            warnings.simplefilter("ignore")
            qweight = torch.quantize_per_channel(weight, scales, zero_points, 0, torch.qint8)
            self.packed = torch.ops.quantized.linear_prepack(qweight, bias)
        self.has_bias = bias is not None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Rows rounded up as the packed fp32 layers do (``bucket_rows``): oneDNN keeps a primitive, and its
        # memory, per shape it has run, and every batch shape was a new one (+87 MB over 1,000 predictions of
        # bert-base). Zero rows change neither the input's scale (its range already holds 0) nor the real rows.
        rows = x.numel() // self.in_features
        padded = bucket_rows(rows)
        flat = x.reshape(rows, self.in_features).float()
        if padded != rows:
            flat = torch.nn.functional.pad(flat, (0, 0, 0, padded - rows))
        out = torch.ops.quantized.linear_dynamic(flat, self.packed, False)
        return out[:rows].reshape(*x.shape[:-1], self.out_features)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.has_bias}, int8"


class Int8Words(nn.Module):
    """A word matrix (vocabulary x hidden) in int8, one scale per word: ``weight`` and ``scales`` are buffers, shared
    by the embedding and the decoder that use them."""

    def __init__(self, weight: torch.Tensor) -> None:
        super().__init__()
        weight = weight.detach().float()
        scales = (weight.abs().amax(dim=1) / 127.0).clamp(min=1e-8)
        self.register_buffer("weight", torch.round(weight / scales[:, None]).clamp(-127, 127).to(torch.int8))
        self.register_buffer("scales", scales)


class Int8Embedding(nn.Module):
    """``nn.Embedding``'s lookup from ``Int8Words`` (inference only: no padding gradient, no max_norm)."""

    def __init__(self, words: Int8Words) -> None:
        super().__init__()
        self.words = words

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.words.weight[ids].float() * self.words.scales[ids].unsqueeze(-1)


class Int8Decoder(nn.Module):
    """The MLM head's decoder (hidden -> vocabulary logits) on the same ``Int8Words``: each input row is quantized
    with a scale of its own, multiplied in int8 (``torch._int_mm``, int32 sums) and scaled back, plus the bias."""

    def __init__(self, words: Int8Words, linear: nn.Linear) -> None:
        super().__init__()
        self.words = words
        bias = torch.zeros(linear.out_features) if linear.bias is None else linear.bias.detach().float().clone()
        self.register_buffer("bias", bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.reshape(-1, x.shape[-1]).float()
        scale = flat.abs().amax(dim=1, keepdim=True).clamp(min=1e-8) / 127.0
        quantized = torch.round(flat / scale).to(torch.int8)
        out = (torch._int_mm(quantized, self.words.weight.t()).float() * scale).mul_(self.words.scales).add_(self.bias)
        return out.reshape(*x.shape[:-1], out.shape[-1])


def quantize_vocabulary(model: nn.Module) -> Swapped:
    """When the input embeddings and the MLM head's decoder are one tied matrix (BERT, RoBERTa, DistilBERT and
    most masked LMs), replace both by one ``Int8Words``; else change nothing. Returns what was replaced."""
    embedding, decoder = model.get_input_embeddings(), model.get_output_embeddings()
    tied = (
        type(embedding) is nn.Embedding
        and type(decoder) is nn.Linear
        and decoder.weight is embedding.weight
        and embedding.max_norm is None
        and hasattr(torch, "_int_mm")
    )
    if not tied:
        return []
    words = Int8Words(embedding.weight)
    made = {id(embedding): Int8Embedding(words), id(decoder): Int8Decoder(words, decoder)}
    swapped: Swapped = []
    for parent in list(model.modules()):
        for name, child in list(parent._modules.items()):
            if id(child) in made:
                setattr(parent, name, made[id(child)])
                swapped.append((parent, name, child))
    return swapped


def quantize_linears(module: nn.Module) -> Swapped:
    """Replace every ``nn.Linear`` under ``module`` by an ``Int8Linear`` (``swap_linears``: a shared layer stays
    shared; on an error everything is put back)."""
    use_engine()
    return swap_linears(module, Int8Linear)


def use_engine() -> None:
    """The quantized kernels every ``Int8Linear`` is made for (before the first one is made)."""
    if not available():
        raise RuntimeError(f"this torch has no {ENGINE} int8 kernels")
    torch.backends.quantized.engine = ENGINE
