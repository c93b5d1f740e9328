"""Choosing where the model runs and in which precision.

Default: CUDA in bf16 (fp16 on GPUs without bf16), else CPU in fp32, where half precision is slower, not faster.
``MODEL_DEVICE`` / ``MODEL_DTYPE`` override either choice.
"""

from __future__ import annotations

import torch

_DTYPES = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
    "float16": torch.float16,
    "fp16": torch.float16,
    "half": torch.float16,
}


def resolve_device(name: str | None) -> torch.device:
    """``None`` or ``"auto"`` picks CUDA when present, else CPU; anything else is passed to torch."""
    if name is None or name.strip().lower() in ("", "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name.strip())
    except RuntimeError as exc:
        raise ValueError(f"MODEL_DEVICE={name!r} is not a device torch knows (try cpu, cuda or cuda:0)") from exc
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"MODEL_DEVICE={name!r} asks for CUDA, but torch sees no CUDA GPU here")
    return device


def resolve_dtype(name: str | None, device: torch.device) -> torch.dtype:
    """``None`` or ``"auto"``: bf16 (or fp16) on CUDA, fp32 elsewhere."""
    if name is None or name.strip().lower() in ("", "auto"):
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.float32
    key = name.strip().lower().removeprefix("torch.")
    if key not in _DTYPES:
        choices = ", ".join(sorted(_DTYPES))
        raise ValueError(f"MODEL_DTYPE={name!r} is not one of: auto, {choices}")
    return _DTYPES[key]
