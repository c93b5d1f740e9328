"""``mlm-bot bench``'s ONNX Runtime rows: the same model exported to ONNX, fp32 and dynamically quantized to int8,
run as a user of ONNX Runtime would (``pip install 'mlm-bot[bench]'``).

Export: ``torch.onnx.export`` of the whole masked LM (full logits at every position, as Optimum exports it).
int8: ``onnxruntime.quantization.quantize_dynamic`` (int8 weights, inputs quantized on the fly: the same scheme
as ``MODEL_DTYPE=int8``). A call tokenizes, runs the session, and takes softmax and the top 5 at each mask, as
the pipeline does (``top_candidates``). One caller: one sentence per call; N callers: N sentences per call (ONNX
Runtime has no batcher of its own; each sentence's latency is its batch's).

Measured in a process of its own, as the baseline is (two torch/ORT thread pools in one process slow each other).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path


def installed() -> bool:
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


def export(model_dir: str, out_dir: Path) -> dict[str, str]:
    """fp32 and int8 ONNX files of ``model_dir``'s masked LM; returns their paths by precision."""
    from models.engine.onnx_export import quietly

    with quietly():
        return _export(model_dir, out_dir)


def _export(model_dir: str, out_dir: Path) -> dict[str, str]:
    import torch
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from transformers import AutoModelForMaskedLM, AutoTokenizer

    out_dir.mkdir(parents=True, exist_ok=True)
    fp32, int8 = out_dir / "model.onnx", out_dir / "model-int8.onnx"
    model = AutoModelForMaskedLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    example = AutoTokenizer.from_pretrained(model_dir)(["a short example sentence ."], return_tensors="pt")
    axes = {0: "batch", 1: "tokens"}
    with torch.inference_mode():
        torch.onnx.export(
            model,
            (example["input_ids"], example["attention_mask"]),
            str(fp32),
            input_names=["input_ids", "attention_mask"],
            output_names=["logits"],
            dynamic_axes={"input_ids": axes, "attention_mask": axes, "logits": axes},
            opset_version=17,
            dynamo=False,
        )
    quantize_dynamic(str(fp32), str(int8), weight_type=QuantType.QInt8)
    return {"fp32": str(fp32), "int8": str(int8)}


def top_candidates(logits, k: int):
    """Softmax over each row of ``logits`` (masks x vocabulary) and the indices of its ``k`` most likely words,
    best first, as a user of ONNX Runtime would take them: ``argpartition`` and a sort of those ``k`` only (a full
    ``argsort`` of 30,522 words took 1.3 ms of a sentence's 10, more than the pipeline's own ``topk``)."""
    import numpy as np

    probs = np.exp(logits - logits.max(-1, keepdims=True))
    probs /= probs.sum(-1, keepdims=True)
    k = min(k, probs.shape[-1])
    part = np.argpartition(-probs, k - 1, axis=-1)[:, :k]
    order = np.argsort(-np.take_along_axis(probs, part, -1), axis=-1, kind="stable")
    return probs, np.take_along_axis(part, order, -1)


def measure(model_dir: str, path: str, precision: str, work: dict[int, list[str]]) -> list[dict]:
    """For each number of callers in ``work``, its sentences through the session, that many per call."""
    import numpy as np
    import onnxruntime as ort
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    mask_id = tokenizer.mask_token_id

    def fill(batch: list[str]) -> list[list[tuple[str, float]]]:
        encoded = tokenizer(batch, return_tensors="np", padding=True)
        (logits,) = session.run(None, {"input_ids": encoded["input_ids"], "attention_mask": encoded["attention_mask"]})
        rows, cols = np.nonzero(encoded["input_ids"] == mask_id)
        probs, top = top_candidates(logits[rows, cols], 5)
        return [[(tokenizer.decode([t]), float(p[t])) for t in row] for row, p in zip(top, probs, strict=True)]

    for level, sentences in work.items():
        fill(sentences[:level])  # warm-up, at this shape
    out = []
    for level, sentences in work.items():
        latencies: list[float] = []
        started = time.perf_counter()
        for start in range(0, len(sentences), level):
            batch = sentences[start : start + level]
            t = time.perf_counter()
            fill(batch)
            latencies += [time.perf_counter() - t] * len(batch)
        seconds = time.perf_counter() - started
        how = "one call per sentence" if level == 1 else f"{level} sentences per call"
        out.append({"path": f"ONNX Runtime {precision}, {how}", "concurrency": level, "latencies": latencies,
                    "seconds": seconds})  # fmt: skip
    return out


def run_in_subprocess(job: dict) -> object:
    """Export and measurements run in a process of their own: torch work on a second thread of the benchmark's
    process (the export) would be a second OpenMP team and slow the engine's forwards (see
    ``models/engine/core.py``)."""
    import subprocess

    done = subprocess.run(
        [sys.executable, "-m", "models.bench.onnx_runtime"],
        input=json.dumps(job),
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"ONNX Runtime failed:\n{done.stderr[-4000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


if __name__ == "__main__":  # the measuring process (see models/bench/benchmark.py)
    job = json.loads(sys.stdin.read())
    if "export_to" in job:
        print(json.dumps(export(job["model"], Path(job["export_to"]))))
        sys.exit(0)
    results = []
    for precision, path in job["paths"].items():
        results += measure(job["model"], path, precision, {int(k): v for k, v in job["work"].items()})
    print(json.dumps(results))
