"""CPU, fp32: the MLM head's decoder product (hidden -> vocabulary logits) as one batched product over equal slices
of the vocabulary (``SplitDecoder``).

For the few rows a chat asks for (one per mask), ``nn.Linear``'s product with bert-base's 30,522 x 768 decoder
is a matrix-vector product over 94 MB that MKL runs on one thread and, for 2-8 rows, through a slower kernel
still. The same weight viewed as ``parts`` slices of the vocabulary, multiplied as one ``bmm`` (the hidden rows
shared by every slice), runs a slice per thread. Measured on a 2-core AMD EPYC (the decoder alone, medians):
1 row 7.1 -> 3.2 ms, 2 rows 15.8 -> 3.2 ms, 4 rows 14.6 -> 3.7 ms, 32 rows 23.6 -> 16.3 ms. Same weight (a view:
still tied to the input embeddings, no copy), the same sums in another order: the engine checks the logits on
the probe and keeps ``nn.Linear`` on any difference (``split_if_same``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import torch
from torch import nn

log = logging.getLogger(__name__)


class SplitDecoder(nn.Module):
    """``nn.Linear``'s forward (inference only) for a decoder whose output rows are the vocabulary: the first
    ``parts * (rows // parts)`` words as ``parts`` slices in one ``bmm``, the remainder (fewer than ``parts``)
    as a plain product. Holds the linear layer's own parameters."""

    def __init__(self, linear: nn.Linear, parts: int) -> None:
        super().__init__()
        self.weight = linear.weight
        self.bias = linear.bias
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.parts = parts

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.reshape(-1, self.in_features)
        rows = flat.shape[0]
        per_part = self.out_features // self.parts
        split = self.parts * per_part
        slices = self.weight[:split].view(self.parts, per_part, self.in_features)
        out = torch.bmm(slices, flat.t().unsqueeze(0).expand(self.parts, self.in_features, rows))
        out = out.reshape(split, rows).t()
        if split < self.out_features:
            out = torch.cat([out, flat @ self.weight[split:].t()], dim=1)
        out = out + self.bias if self.bias is not None else out.contiguous()
        return out.reshape(*x.shape[:-1], self.out_features)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, parts={self.parts}"


def split_if_same(model: nn.Module, logits: Callable[[], torch.Tensor], tolerance: float = 1e-4) -> int:
    """Replace ``model``'s output embeddings (an fp32 ``nn.Linear`` on CPU) by a ``SplitDecoder`` with a slice per
    torch thread, if the logits at the probe's masks stay within ``tolerance`` (relative to their largest); else, or
    on any error, put the linear layer back. Returns the number of slices (0: not split)."""
    decoder = model.get_output_embeddings()
    parts = torch.get_num_threads()
    if type(decoder) is not nn.Linear or decoder.weight.dtype != torch.float32 or decoder.weight.device.type != "cpu":
        return 0
    if parts < 2 or decoder.out_features < 2 * parts:
        return 0
    parent, name = next((p, n) for p in model.modules() for n, c in p._modules.items() if c is decoder)
    with torch.inference_mode():
        before = logits()
        setattr(parent, name, SplitDecoder(decoder, parts))
        try:
            after = logits()
            if (after - before).abs().max().item() > tolerance * (1 + before.abs().max().item()):
                raise RuntimeError("the split decoder does not reproduce the linear one")
        except Exception:
            setattr(parent, name, decoder)
            log.warning("the MLM decoder could not be split; keeping it whole", exc_info=True)
            return 0
    return parts
