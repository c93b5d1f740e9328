"""``MODEL_RUNTIME=onnxruntime``: the model exported to ONNX once, in a process of its own (``python -m
models.engine.onnx_export``, run by ``models/engine/onnx_model.py``), checked, and left in the cache.

The graph is the engine's forward, not the pipeline's: input ids, attention mask and the row/column of every mask
in; the MLM head's logits at the masks only out (the head projects 30,522 words at the masks, not at every token).
int8: ``onnxruntime.quantization.quantize_dynamic`` (int8 weights, each input quantized on the fly: the scheme of
``MODEL_DTYPE=int8``). Before the files are kept, ONNX Runtime runs them on two sentences in one padded batch and
must give the torch model's numbers: fp32 probabilities within 1e-4, int8 logits within 10% (the torch int8 path's
rule; int8 alone gives about 1%).

A process of its own: the export holds the fp32 weights several times over for a moment (the model, the
exporter's folded copies, the serialized graph: bert-base peaks at 2.2 GB) and torch work beside the serving
process's own model thread would slow it (``models/engine/threads.py``); when the export ends, its memory goes back
to the system, and the serving process never holds torch's copy of the weights.
"""

from __future__ import annotations

import contextlib
import gc
import json
import logging
import sys
import time
import warnings
from collections.abc import Iterator
from pathlib import Path

import torch

from models.engine.memory import return_freed_memory

CHECK_TEXTS = ("The cat sat on the {mask}.", "Paris is the {mask} of France, and {mask} is the capital of Italy.")
MAX_FP32_PROBABILITY_GAP = 1e-4
MAX_INT8_RELATIVE_ERROR = 0.1


def export(name: str, local_files_only: bool, int8: bool, out_dir: Path) -> dict[str, object]:
    """Write ``model.onnx`` (and ``meta.json``, last) into ``out_dir``; returns what ``meta.json`` says. Raises
    if the export or the check fails."""
    with quietly():
        return _export(name, local_files_only, int8, out_dir)


@contextlib.contextmanager
def quietly() -> Iterator[None]:
    """The exporter's tracer warnings and the quantizer's per-layer notes (on the root logger), silenced."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        root.setLevel(level)


def _export(name: str, local_files_only: bool, int8: bool, out_dir: Path) -> dict[str, object]:
    import onnxruntime as ort
    from transformers import AutoModelForMaskedLM, AutoTokenizer

    from models.engine.head import mlm_head

    started = time.monotonic()
    tokenizer = AutoTokenizer.from_pretrained(name, local_files_only=local_files_only)
    model = AutoModelForMaskedLM.from_pretrained(name, dtype=torch.float32, local_files_only=local_files_only).eval()
    texts = [t.format(mask=tokenizer.mask_token) for t in CHECK_TEXTS]
    batch = tokenizer(texts, return_tensors="pt", padding=True)
    ids, attention = batch["input_ids"], batch["attention_mask"]
    rows, cols = (ids == tokenizer.mask_token_id).nonzero(as_tuple=True)
    graph = _MaskLogits(model, mlm_head(model))
    with torch.inference_mode():
        full = model(input_ids=ids, attention_mask=attention).logits[rows, cols]
        if graph.head is not None and not torch.allclose(graph(ids, attention, rows, cols), full, atol=1e-4, rtol=1e-4):
            graph.head = None  # an architecture whose head cannot run at the masks alone: full logits, then gather
        out_dir.mkdir(parents=True, exist_ok=True)
        path = out_dir / "model.onnx"
        fp32 = out_dir / "model-fp32.onnx" if int8 else path
        torch.onnx.export(
            graph,
            (ids, attention, rows, cols),
            str(fp32),
            input_names=["input_ids", "attention_mask", "rows", "cols"],
            output_names=["logits"],
            dynamic_axes={
                "input_ids": {0: "batch", 1: "tokens"},
                "attention_mask": {0: "batch", 1: "tokens"},
                "rows": {0: "masks"},
                "cols": {0: "masks"},
                "logits": {0: "masks"},
            },
            opset_version=17,
            dynamo=False,
        )
    head_at_masks = graph.head is not None
    del graph, model  # torch's copy of the weights, before the quantizer reads its own (the export's peak memory)
    gc.collect()
    return_freed_memory()
    if int8:
        from onnxruntime.quantization import QuantType, quantize_dynamic

        quantize_dynamic(str(fp32), str(path), weight_type=QuantType.QInt8)
        fp32.unlink()
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    feeds = {"input_ids": ids.numpy(), "attention_mask": attention.numpy(), "rows": rows.numpy(), "cols": cols.numpy()}
    got = torch.from_numpy(session.run(None, feeds)[0])
    if got.shape != full.shape:
        raise RuntimeError(f"the exported model gives logits of shape {tuple(got.shape)}, not {tuple(full.shape)}")
    if int8:
        error = ((got - full).norm() / full.norm().clamp(min=1e-6)).item()
        limit = MAX_INT8_RELATIVE_ERROR
    else:
        error = (got.softmax(-1) - full.softmax(-1)).abs().max().item()
        limit = MAX_FP32_PROBABILITY_GAP
    if not error <= limit:
        precision = "int8" if int8 else "fp32"
        raise RuntimeError(f"ONNX Runtime's {precision} model is {error:.3g} off torch's (limit {limit})")
    meta = {
        "model": name,
        "precision": "int8" if int8 else "float32",
        "head_at_masks": head_at_masks,
        "error": error,
        "seconds": round(time.monotonic() - started, 1),
    }
    (out_dir / "meta.json").write_text(json.dumps(meta))  # last: a folder without it is an export that died
    return meta


class _MaskLogits(torch.nn.Module):
    """What the graph computes: the encoder, then the MLM head at the mask positions only (or, when the head
    cannot be split off, the full model's logits gathered at the masks)."""

    def __init__(self, model, head) -> None:
        super().__init__()
        self.model = model
        self.head = head

    def forward(self, ids, attention, rows, cols):
        if self.head is None:
            return self.model(input_ids=ids, attention_mask=attention).logits[rows, cols]
        hidden = self.model.base_model(input_ids=ids, attention_mask=attention)[0]
        return self.head(hidden[rows, cols])


if __name__ == "__main__":  # run by models/engine/onnx_model.py: a JSON job on stdin, meta.json's JSON on stdout
    job = json.loads(sys.stdin.read())
    print(json.dumps(export(job["name"], job["local_files_only"], job["int8"], Path(job["out_dir"]))))
