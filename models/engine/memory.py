"""How much memory a model takes: estimated from its weight files before loading, counted on the engine after.

``/compare`` keeps its models within ``COMPARE_MEMORY_MB`` (``bot/compare_models.py``) with these two numbers.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import logging
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from models.engine.accel.int8_linear import Int8Decoder, Int8Linear
from models.engine.accel.packed_linear import PackedLinear
from models.engine.device import wants_int8

log = logging.getLogger(__name__)

WEIGHT_FILES = ("*.safetensors", "*.bin")


def weight_files(name: str) -> list[Path]:
    """The weights of a local folder or of a hub id in the local cache (nothing if it is not there yet)."""
    folder = Path(name).expanduser()
    if not folder.is_dir():
        try:
            from huggingface_hub import try_to_load_from_cache

            config = try_to_load_from_cache(name, "config.json")
        except Exception:  # a name the hub's client refuses (not an id): nothing known
            return []
        if not isinstance(config, str):
            return []
        folder = Path(config).parent
    safetensors = sorted(folder.glob(WEIGHT_FILES[0]))
    return safetensors or sorted(folder.glob(WEIGHT_FILES[1]))


def estimate_bytes(name: str, dtype: str | None) -> int | None:
    """What ``name`` will take once loaded, from its weight files (None when they are not here yet): the files'
    size, halved for bf16/fp16 and about 0.4 of it for int8 (the linear layers are a quarter, the embeddings
    stay fp32). The files are fp32 for the models people use here."""
    files = weight_files(name)
    if not files:
        return None
    size = sum(f.stat().st_size for f in files)
    key = (dtype or "").strip().lower()
    if wants_int8(dtype):
        return int(size * 0.4)
    if key in ("bfloat16", "bf16", "float16", "fp16", "half"):
        return size // 2
    return size


def model_bytes(model: nn.Module) -> int:
    """Bytes of the model's tensors as the engine runs it: parameters and buffers (each storage once, tied
    weights counted once, the int8 vocabulary's buffers too), plus the packed fp32 and int8 copies of its linear
    layers."""
    seen: set[int] = set()
    total = 0
    for tensor in [*model.parameters(), *model.buffers()]:
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in seen:
            seen.add(storage.data_ptr())
            total += storage.nbytes()
    for module in {id(m): m for m in model.modules()}.values():
        if isinstance(module, PackedLinear):
            total += (
                module.in_features
                * module.out_features
                * (module.packed_bias.element_size() if module.packed_bias is not None else 4)
            )
        elif isinstance(module, Int8Linear):  # the packed int8 weight (fbgemm keeps no other copy), the fp32 bias
            total += module.in_features * module.out_features + 4 * module.out_features
        elif isinstance(module, Int8Decoder):  # its packed int8 copy of the words (they and the bias are buffers)
            total += module.in_features * module.out_features
    return total


def own_tensors(model: nn.Module) -> None:
    """Give every parameter and buffer of ``model`` memory of its own.

    transformers loads a safetensors checkpoint by mapping the file: the tensors are views of it, and the whole
    file stays mapped (and counted in the process's RSS) while any one of them lives. Once the linear layers
    have packed or int8 copies of their own, what is left (embeddings, layer norms, biases: about a fifth of
    bert-base) is copied out, and the file's 440 MB can go. Shared parameters stay shared."""
    done: set[int] = set()
    with torch.no_grad():
        for module in model.modules():
            for parameter in module._parameters.values():
                if parameter is not None and id(parameter) not in done:
                    done.add(id(parameter))
                    parameter.data = parameter.data.clone()
            for name, buffer in list(module._buffers.items()):
                if buffer is not None:
                    module._buffers[name] = buffer.clone()


def return_freed_memory() -> None:
    """Hand freed heap memory back to the system (glibc keeps freed heap pages otherwise; elsewhere this does
    nothing). About 6 ms with bert-base loaded."""
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    name = ctypes.util.find_library("c")  # runs ldconfig: once
    try:
        return ctypes.CDLL(name).malloc_trim if name else None
    except (OSError, AttributeError):
        return None
