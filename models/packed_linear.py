"""CPU: the encoder's linear layers with their weights packed once for oneDNN.

On CPU, ``nn.Linear`` hands its weight, as stored, to MKL's matrix product, which packs it again inside every
call. oneDNN can reorder each weight once, at load, into the blocked layout its kernels read, and those kernels
then run faster than the plain product on the CPU measured (``benchmarks/packed_weights.py``: the engine's
forward, plain and packed layers interleaved; 2-core AMD Zen 4, bert-base shape, torch 2.13). fp32: one
sentence of 12 tokens 64 -> 34 ms (1.92x), 8 sentences 1.54x, 32 sentences 470 -> 385 ms (1.22x), the same
probabilities to 2e-6 against the pipeline. bf16: 1.57x at one sentence, 1.06x at 32, identical outputs.

The two ops are torch's own, the ones Inductor uses when it freezes a model for CPU with a batch size that varies
(``torch.ops.mkldnn._reorder_linear_weight`` and ``torch.ops.mkldnn._linear_pointwise``), but their names are
private, and not every CPU supports every precision (fp16 needs AVX-512 FP16). So the engine packs at warm-up,
checks the packed encoder against the eager one on the probe sentence, and puts the plain layers back on any
error or difference (``FillMaskEngine._pack_weights``).
"""

from __future__ import annotations

import platform

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


class PackedLinear(nn.Module):
    """``nn.Linear``'s forward, with the weight in oneDNN's own layout (inference only: it has no parameters).

    The packed weight is an opaque oneDNN tensor, so it is kept as a plain attribute: invisible to
    ``state_dict``, ``parameters()`` and ``.to()``, which could do nothing sensible with it."""

    def __init__(self, linear: nn.Linear) -> None:
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.packed_weight = torch.ops.mkldnn._reorder_linear_weight(linear.weight.detach(), None)
        self.packed_bias = None if linear.bias is None else linear.bias.detach()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.ops.mkldnn._linear_pointwise(x, self.packed_weight, self.packed_bias, "none", [], "")

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.packed_bias is not None}"


Swapped = list[tuple[nn.Module, str, nn.Linear]]


def pack_linears(module: nn.Module) -> Swapped:
    """Replace every ``nn.Linear`` under ``module`` (exactly that class: subclasses may do more in forward) by a
    ``PackedLinear``. A layer used in several places (ALBERT shares its layers) is packed once and stays shared.
    Returns what was replaced, for ``unpack``; on an error, puts back what it had replaced and raises."""
    swapped: Swapped = []
    packed: dict[int, PackedLinear] = {}
    try:
        for parent in list(module.modules()):
            # _modules, not named_children(), which yields a module registered under two names only once
            for name, child in list(parent._modules.items()):
                if type(child) is not nn.Linear:
                    continue
                if id(child) not in packed:
                    packed[id(child)] = PackedLinear(child)
                setattr(parent, name, packed[id(child)])
                swapped.append((parent, name, child))
    except BaseException:
        unpack(swapped)
        raise
    return swapped


def unpack(swapped: Swapped) -> None:
    """Put the original layers back."""
    for parent, name, original in reversed(swapped):
        setattr(parent, name, original)
