"""Choosing where the model runs and in which precision.

Default: CUDA in bf16 (fp16 on GPUs without bf16), else CPU in fp32: the same numbers as Hugging Face's pipeline.
``MODEL_DEVICE`` / ``MODEL_DTYPE`` override either choice. On a CPU without bf16 instructions half precision is
converted to fp32 inside each product, usually slower than fp32 itself. On one with them (AVX-512 BF16: AMD
Zen 4 and later, Intel Cooper Lake; AMX: Intel Sapphire Rapids and later) ``MODEL_DTYPE=bfloat16`` runs the
model about 1.8 times as fast (a batch of 32 bert-base sentences on a 2-core Zen 4, both packed for oneDNN),
within about 0.02 in probability, so the engine says so when it loads.
"""

from __future__ import annotations

import logging
from functools import cache
from pathlib import Path

import torch

log = logging.getLogger(__name__)

# /proc/cpuinfo's names for the x86 instructions that make bf16 matrix products native, best first.
BF16_CPU_FLAGS = ("amx_bf16", "avx512_bf16")

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
    if is_auto(name):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name.strip())
    except RuntimeError as exc:
        raise ValueError(f"MODEL_DEVICE={name!r} is not a device torch knows (try cpu, cuda or cuda:0)") from exc
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"MODEL_DEVICE={name!r} asks for CUDA, but torch sees no CUDA GPU here")
    return device


def is_auto(name: str | None) -> bool:
    """Whether a ``MODEL_DEVICE``/``MODEL_DTYPE`` value leaves the choice to the engine."""
    return name is None or name.strip().lower() in ("", "auto")


INT8_NAMES = ("int8", "qint8")


def wants_int8(name: str | None) -> bool:
    """Whether ``MODEL_DTYPE`` asks for int8 weights (``models/engine/accel/int8_linear.py``): the model loads in
    fp32 and its linear layers are quantized at warm-up."""
    return name is not None and name.strip().lower() in INT8_NAMES


def resolve_dtype(name: str | None, device: torch.device) -> torch.dtype:
    """``None`` or ``"auto"``: bf16 (or fp16) on CUDA, fp32 elsewhere. ``int8`` loads in fp32 (CPU only)."""
    if wants_int8(name):
        if device.type != "cpu":
            raise ValueError(f"MODEL_DTYPE={name!r} is for CPU; on {device.type} use bfloat16 (the default there)")
        return torch.float32
    if is_auto(name):
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.float32
    key = name.strip().lower().removeprefix("torch.")
    if key not in _DTYPES:
        choices = ", ".join(sorted(_DTYPES))
        raise ValueError(f"MODEL_DTYPE={name!r} is not one of: auto, int8, {choices}")
    return _DTYPES[key]


def cpu_bf16_instructions(cpuinfo: Path = Path("/proc/cpuinfo")) -> str | None:
    """The CPU's native bf16 instructions (``amx_bf16`` or ``avx512_bf16``), or None: none, or no
    ``/proc/cpuinfo`` to tell (not Linux)."""
    try:
        text = cpuinfo.read_text(errors="replace")
    except OSError:
        return None
    flags: set[str] = set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "flags":
            flags = set(value.split())
            break
    return next((f for f in BF16_CPU_FLAGS if f in flags), None)


RUNTIMES = ("torch", "onnxruntime")


def resolve_placement(device: str | None, dtype: str | None, runtime: str) -> tuple[torch.device, torch.dtype, bool]:
    """The device and dtype the model loads in, and whether ONNX Runtime runs it (``MODEL_RUNTIME``): that runs
    on the CPU (``auto`` then means the CPU, on a GPU machine too) in fp32 or int8."""
    if runtime not in RUNTIMES:
        raise ValueError(f"MODEL_RUNTIME={runtime!r} is not one of: {', '.join(RUNTIMES)}")
    on_ort = runtime == "onnxruntime"
    torch_device = resolve_device("cpu" if on_ort and is_auto(device) else device)
    torch_dtype = resolve_dtype(dtype, torch_device)
    if on_ort and (torch_device.type != "cpu" or torch_dtype != torch.float32):
        raise ValueError("MODEL_RUNTIME=onnxruntime runs on the CPU in float32 or int8 (MODEL_DTYPE=auto/float32/int8)")
    return torch_device, torch_dtype, on_ort


def suggest_bf16() -> None:
    """Say once per process (the bot may load five models) that this CPU could run fp32 models in bf16."""
    instructions = cpu_bf16_instructions()
    if instructions:
        _suggest_bf16(instructions)


@cache
def _suggest_bf16(instructions: str) -> None:
    log.info(
        "this CPU has native bf16 (%s): MODEL_DTYPE=bfloat16 runs the model about 1.8 times as fast, with "
        "probabilities within about 0.02 of fp32 (fp32, the default, gives the pipeline's numbers)",
        instructions,
    )
