"""CPU: the model's linear layers with int8 weights (``MODEL_DTYPE=int8``).

Dynamic quantization, as ONNX Runtime's ``quantize_dynamic`` does it: each weight is stored once as int8 with one
scale per output row (per channel: a row of small weights keeps its own precision), and each product quantizes
its input on the fly (one scale per call), multiplies in int8 and returns fp32. Everything else (attention, layer
norms, softmax) stays fp32.

The vocabulary matrix (30,522 x 768 in bert-base: a fifth of the model) is both the input embeddings and, tied, the
MLM head's decoder. It is quantized once, in int8 with one scale per word (``Int8Words``): looked up row by row on
the way in (``Int8Embedding``), and packed for the int8 kernels from those same int8 numbers on the way out
(``Int8Decoder``). Measured on bert-base's shape: 22 + 22 MB instead of 94 MB of fp32 embeddings and a fp32
decoder; the packed decoder takes 0.4 ms for one mask where ``torch._int_mm`` on the words themselves took 1.4 ms
(the engine's forward, torch's profiler) and fp32 7 ms.

It runs on fbgemm's int8 kernels (``torch.backends.quantized.engine = "fbgemm"``), chosen by measurement over
oneDNN's (2-core AMD EPYC with AVX-512 VNNI, bert-base shape, the lean layers, one process, five interleaved rounds,
medians of one / 8 / 32 sentences per forward: fbgemm 13.5 / 44.1 / 150.9 ms, oneDNN 20.0 / 52.1 / 159.0 ms), and
for memory: oneDNN keeps the quantized weight beside its packed copy (about 85 MB of bert-base twice), fbgemm keeps
only its packed one. oneDNN also keeps a primitive per input shape, so its rows had to be rounded up to a few
sizes (a 12-token sentence ran as 16 rows); fbgemm keeps nothing per shape and runs the rows as they are. Where
torch has no fbgemm (it is for x86: ARM servers), oneDNN's int8 kernels run instead, with the rows rounded.

Without AVX-512 VNNI (AVX2 servers: most Zen 2/3, older Xeons) the kernels add pairs of u8 x s8 products in 16
bits, which can saturate with a full 8-bit input; there each input is quantized to 7 bits (``reduce_range``, what
torch's own dynamic ``Linear`` always does), and the warm-up check against fp32 still stands behind it.

The ops are torch's own (``quantized::linear_prepack``, ``quantized::linear_dynamic``), which torch marks as
deprecated in favour of torchao; so, as with the packed layers, the engine quantizes at warm-up, checks the model
against the fp32 one on the probe sentence and keeps fp32 on any error (``Forwarder.quantize_weights``).
"""

from __future__ import annotations

import warnings

import torch
from torch import nn

from models.engine.accel.packed_linear import Swapped, bucket_rows, swap_linears

ENGINES = ("fbgemm", "onednn")  # the first one this torch has: fbgemm measured faster and lighter on x86


def engine() -> str | None:
    """The quantized engine the int8 layers run on, or None when this torch has neither."""
    if not hasattr(torch.ops.quantized, "linear_dynamic"):
        return None
    return next((e for e in ENGINES if e in torch.backends.quantized.supported_engines), None)


def available() -> bool:
    return engine() is not None


def full_range_inputs() -> bool:
    """Whether the int8 kernels can take inputs in the full 8 bits: with AVX-512 VNNI their sums are 32-bit; without
    it (or with no way to tell) an input is quantized to 7 bits, so that no 16-bit pair sum saturates."""
    is_vnni = getattr(torch.cpu, "_is_vnni_supported", None)
    try:
        return bool(is_vnni()) if is_vnni is not None else False
    except Exception:  # a private torch helper: any failure means "can't tell"
        return False


class Int8Linear(nn.Module):
    """``nn.Linear``'s forward with an int8 weight (one scale per output row) and an fp32 bias; inference only.

    The prepacked weight is an opaque object of the quantized engine, kept as a plain attribute (invisible to
    ``state_dict`` and ``.to()``); fbgemm keeps the weight only in its packed layout."""

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
        self.reduce_range = not full_range_inputs()
        self.rounded = torch.backends.quantized.engine == "onednn"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return int8_product(self, x)

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
    """The MLM head's decoder (hidden -> vocabulary logits) from the same ``Int8Words``: their int8 numbers and
    scales packed for the int8 kernels (the words' rows are its output rows), plus the bias; inference only."""

    def __init__(self, words: Int8Words, linear: nn.Linear) -> None:
        super().__init__()
        self.words = words  # what it was made from; the product reads only the packed copy
        self.in_features, self.out_features = linear.in_features, linear.out_features
        bias = torch.zeros(linear.out_features) if linear.bias is None else linear.bias.detach().float().clone()
        self.register_buffer("bias", bias)
        zero_points = torch.zeros(words.weight.shape[0], dtype=torch.long)
        with warnings.catch_warnings():  # torch's deprecation notice of quantized tensors
            warnings.simplefilter("ignore")
            qweight = torch._make_per_channel_quantized_tensor(words.weight, words.scales.double(), zero_points, 0)
            self.packed = torch.ops.quantized.linear_prepack(qweight, self.bias)
        self.reduce_range = not full_range_inputs()
        self.rounded = torch.backends.quantized.engine == "onednn"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return int8_product(self, x)


def int8_product(layer: Int8Linear | Int8Decoder, x: torch.Tensor) -> torch.Tensor:
    """``x`` (any leading dimensions) times the layer's packed int8 weight, plus its bias, in fp32. On oneDNN the
    rows are rounded as the packed fp32 layers' are: it keeps a primitive, and its memory, per input shape (+87 MB
    over 1,000 predictions of bert-base); zero rows change neither the input's scale (its range already holds 0)
    nor the real rows. fbgemm keeps nothing per shape and takes the input as it is."""
    if not layer.rounded:
        return torch.ops.quantized.linear_dynamic(x.float(), layer.packed, layer.reduce_range)
    rows = x.numel() // layer.in_features
    flat = torch.nn.functional.pad(x.reshape(rows, layer.in_features).float(), (0, 0, 0, bucket_rows(rows) - rows))
    out = torch.ops.quantized.linear_dynamic(flat, layer.packed, layer.reduce_range)
    return out[:rows].reshape(*x.shape[:-1], layer.out_features)


def quantize_vocabulary(model: nn.Module) -> Swapped:
    """When the input embeddings and the MLM head's decoder are one tied matrix (BERT, RoBERTa, DistilBERT and
    most masked LMs), replace both by one ``Int8Words``; else change nothing. Returns what was replaced."""
    embedding, decoder = model.get_input_embeddings(), model.get_output_embeddings()
    tied = (
        type(embedding) is nn.Embedding
        and type(decoder) is nn.Linear
        and decoder.weight is embedding.weight
        and embedding.max_norm is None
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
    chosen = engine()
    if chosen is None:
        raise RuntimeError(f"this torch has none of the int8 kernels {', '.join(ENGINES)}")
    torch.backends.quantized.engine = chosen
