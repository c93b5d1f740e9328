"""CPU: the encoder's linear layers with their weights packed once for oneDNN.

On CPU, ``nn.Linear`` hands its weight, as stored, to MKL's matrix product, which packs it again inside every
call. oneDNN can reorder each weight once, at load, into the blocked layout its kernels read, and those kernels
then run faster than the plain product on the CPU measured (``benchmarks/packed_weights.py``: the engine's
forward, plain and packed layers interleaved; 2-core AMD Zen 4, bert-base shape, torch 2.13). fp32, with the
rows rounded (``bucket_rows``): one sentence of 12 tokens 61 -> 37 ms (1.64x), 8 sentences 1.44x, 32 sentences
451 -> 377 ms (1.19x), the same probabilities to 2e-6 against the pipeline. bf16 (before the rounding): 1.57x at
one sentence, 1.06x at 32, identical outputs.

The two ops are torch's own, the ones Inductor uses when it freezes a model for CPU with a batch size that varies
(``torch.ops.mkldnn._reorder_linear_weight`` and ``torch.ops.mkldnn._linear_pointwise``), but their names are
private, and not every CPU supports every precision (fp16 needs AVX-512 FP16). So the engine packs at warm-up,
checks the packed encoder against the eager one on the probe sentence, and puts the plain layers back on any
error or difference (``FillMaskEngine._pack_weights``).
"""

from __future__ import annotations

import platform
from collections.abc import Callable

import torch
from torch import nn

# Where the engine packs without being asked: the CPUs it was measured on. Elsewhere (ARM's oneDNN goes through
# the Arm Compute Library) MODEL_PACKED_WEIGHTS=1 asks for it, and the warm-up check still guards it.
MEASURED_MACHINES = frozenset({"x86_64", "amd64"})


def available() -> bool:
    """Whether this torch has oneDNN and the two ops."""
    if not torch.backends.mkldnn.is_available():
        return False
    ops = torch.ops.mkldnn
    return hasattr(ops, "_reorder_linear_weight") and hasattr(ops, "_linear_pointwise")


def packs_by_default() -> bool:
    """Whether ``auto`` packs on this machine (checked again against the eager encoder at warm-up)."""
    return platform.machine().lower() in MEASURED_MACHINES and available()


def bucket_rows(rows: int) -> int:
    """The number of rows a packed product runs with: ``rows`` rounded up to a multiple of 4 up to 32 rows (one
    chat sentence: at these sizes the product's time follows its rows, and a 12-token sentence run as 16 rows took
    1.12x as long), of 16 up to 128, and past that to one of 8 sizes per doubling (at most 1/8 more rows). oneDNN
    keeps a primitive (and its memory, about 0.7 MB for one of bert-base's layers) for every shape it has run, up
    to 1,024 of them: with the rows of every batch as they came (sentences times tokens), the bot's memory grew
    with each new batch shape. Rounded, a few dozen shapes cover every batch; the extra rows are zeros, and each
    row's result is its own."""
    if rows <= 32:
        return max(4, -(-rows // 4) * 4)
    step = max(16, 1 << max(0, (rows - 1).bit_length() - 4))
    return -(-rows // step) * step


class PackedLinear(nn.Module):
    """``nn.Linear``'s forward, with the weight in oneDNN's own layout (inference only: it has no parameters); with
    ``gelu``, ``gelu(linear(x))`` (erf's, exact), the GELU applied by oneDNN inside the product as it writes each
    output (a BERT layer's intermediate product: one pass over 3,072 columns a token fewer).

    The packed weight is an opaque oneDNN tensor, so it is kept as a plain attribute: invisible to
    ``state_dict``, ``parameters()`` and ``.to()``, which could do nothing sensible with it."""

    def __init__(self, linear: nn.Linear, *, gelu: bool = False) -> None:
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.packed_weight = torch.ops.mkldnn._reorder_linear_weight(linear.weight.detach(), None)
        self.packed_bias = None if linear.bias is None else linear.bias.detach().clone()  # not a view of the file
        self.gelu = gelu
        self._post_op = ("gelu", "none") if gelu else ("none", "")  # oneDNN's names: GELU with erf, or nothing

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        attr, algorithm = self._post_op
        rows = x.numel() // self.in_features
        padded = bucket_rows(rows)
        if padded == rows:  # most sentences: the op takes any leading dimensions as they are
            return torch.ops.mkldnn._linear_pointwise(x, self.packed_weight, self.packed_bias, attr, [], algorithm)
        flat = torch.nn.functional.pad(x.reshape(rows, self.in_features), (0, 0, 0, padded - rows))
        out = torch.ops.mkldnn._linear_pointwise(flat, self.packed_weight, self.packed_bias, attr, [], algorithm)
        return out[:rows].reshape(*x.shape[:-1], self.out_features)

    def extra_repr(self) -> str:
        bias = self.packed_bias is not None
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={bias}, gelu={self.gelu}"


Swapped = list[tuple[nn.Module, str, nn.Linear]]


def pack_linears(module: nn.Module) -> Swapped:
    """Replace every ``nn.Linear`` under ``module`` by a ``PackedLinear`` (``swap_linears``)."""
    return swap_linears(module, PackedLinear)


def swap_linears(module: nn.Module, make: Callable[[nn.Linear], nn.Module]) -> Swapped:
    """Replace every ``nn.Linear`` under ``module`` (exactly that class: subclasses may do more in forward) by
    ``make(layer)``. A layer used in several places (ALBERT shares its layers) is replaced once and stays shared.
    Returns what was replaced, for ``unpack``; on an error, puts back what it had replaced and raises."""
    swapped: Swapped = []
    made: dict[int, nn.Module] = {}
    try:
        for parent in list(module.modules()):
            # _modules, not named_children(), which yields a module registered under two names only once
            for name, child in list(parent._modules.items()):
                if type(child) is not nn.Linear:
                    continue
                if id(child) not in made:
                    made[id(child)] = make(child)
                setattr(parent, name, made[id(child)])
                swapped.append((parent, name, child))
    except BaseException:
        unpack(swapped)
        raise
    return swapped


def unpack(swapped: Swapped) -> None:
    """Put the original layers back."""
    for parent, name, original in reversed(swapped):
        setattr(parent, name, original)
