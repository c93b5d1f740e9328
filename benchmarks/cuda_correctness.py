"""The engine on CUDA against Hugging Face's pipeline on CPU in fp32, on a bert-base-shaped model.

Random weights with bert-base's default init give nearly uniform predictions, where any rounding reorders the
top words; so the model is built with a wider init (``--init-range``, default 0.08) that makes its predictions
confident, as a trained model's are. For each path (CUDA fp32, CUDA bf16, with and without CUDA graphs) it
prints, over all sentences and masks:

* ``max|dp|``: the largest absolute difference between the engine's and the pipeline's probability of the
  same token among the pipeline's top 5;
* ``top1``: how often the top word agrees, and how often it agrees where the pipeline's top two are more than
  ``--margin`` apart (below that, bf16's 8-bit mantissa may legitimately swap them);
* ``top5 overlap``: the mean share of the pipeline's top 5 that the engine also returns.

Exits non-zero if fp32 is not within 1e-3 (relative) of the pipeline or bf16's ``max|dp|`` is over
``--bf16-tolerance``. Run: ``python benchmarks/cuda_correctness.py --sentences 512 --json-out result.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sentences", type=int, default=256)
    parser.add_argument("--init-range", type=float, default=0.08)
    parser.add_argument("--margin", type=float, default=0.05)
    parser.add_argument("--bf16-tolerance", type=float, default=0.02)
    parser.add_argument("--json-out")
    parser.add_argument("--device", default="cuda", help="cuda (cpu only to try the script itself)")
    args = parser.parse_args()

    import torch
    from transformers import BertConfig, BertForMaskedLM, BertTokenizer, pipeline

    from models.bench.random_models import sentences, wordpiece_vocab
    from models.engine.core import FillMaskEngine

    if args.device == "cuda" and not torch.cuda.is_available():
        print("no CUDA GPU here: nothing to check", file=sys.stderr)
        return 1
    gpu = torch.cuda.get_device_name(0) if args.device == "cuda" else "none"
    report: dict[str, object] = {"gpu": gpu, "torch": torch.__version__}
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp) / "bert-base-shape"
        vocab = wordpiece_vocab(30522, ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"])
        BertTokenizer(vocab={w: i for i, w in enumerate(vocab)}, model_max_length=512).save_pretrained(directory)
        torch.manual_seed(0)
        config = BertConfig(vocab_size=len(vocab), initializer_range=args.init_range)
        BertForMaskedLM(config).eval().save_pretrained(directory)

        texts = sentences(args.sentences, seed=4) + sentences(args.sentences // 4, seed=5, masks=2)
        reference = pipeline("fill-mask", model=str(directory), device="cpu", dtype=torch.float32)
        started = time.perf_counter()
        expected = [_per_mask(reference(t, top_k=5)) for t in texts]
        report["pipeline_cpu_seconds"] = round(time.perf_counter() - started, 1)
        failures = []
        for dtype in ("float32", "bfloat16"):
            for graphs in (False, True) if args.device == "cuda" else (False,):
                engine = FillMaskEngine.load(
                    directory, device=args.device, dtype=dtype, cuda_graphs=graphs, max_batch_size=64
                )
                name = f"{args.device} {dtype}" + (", CUDA graphs" if engine.graphs_active else "")
                stats = _compare(engine, texts, expected, args.margin)
                report[name] = stats
                print(name, json.dumps(stats), flush=True)
                limit_ok = stats["max_rel_dp"] <= 1e-3 if dtype == "float32" else stats["max_dp"] <= args.bf16_tolerance
                if not limit_ok or (graphs and not engine.graphs_active):
                    failures.append(name)
                engine.model_thread.shutdown()
                del engine
                torch.cuda.empty_cache()
    report["failures"] = failures
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(report, indent=2))
    print("FAILED: " + ", ".join(failures) if failures else "all within tolerance")
    return 1 if failures else 0


def _per_mask(answer: list) -> list[list[dict]]:
    return answer if answer and isinstance(answer[0], list) else [answer]


def _compare(engine, texts: list[str], expected: list[list[list[dict]]], margin: float) -> dict[str, float]:
    from models.engine.results import FillMaskRequest

    batch = engine.prepare_batch([FillMaskRequest(t, 5) for t in texts])
    outputs = []
    for start in range(0, len(batch), 64):
        part = batch[start : start + 64]
        outputs += engine.run_forward(part)
    max_dp = max_rel = 0.0
    top1 = top1_clear = clear = masks = 0
    overlap = 0.0
    for out, ref in zip(outputs, expected, strict=True):
        for scores, tokens, ref_mask in zip(out.scores, out.token_ids, ref, strict=True):
            masks += 1
            ours = dict(zip(tokens, scores, strict=True))
            for p in ref_mask:
                if p["token"] in ours:
                    dp = abs(ours[p["token"]] - p["score"])
                    max_dp = max(max_dp, dp)
                    max_rel = max(max_rel, dp / max(p["score"], 1e-6))
            same = tokens[0] == ref_mask[0]["token"]
            top1 += same
            if ref_mask[0]["score"] - ref_mask[1]["score"] > margin:
                clear += 1
                top1_clear += same
            overlap += len(set(tokens) & {p["token"] for p in ref_mask}) / len(ref_mask)
    return {
        "masks": masks,
        "max_dp": round(max_dp, 6),
        "max_rel_dp": round(max_rel, 6),
        "top1_agree": round(top1 / masks, 4),
        "top1_agree_clear_margin": round(top1_clear / clear, 4) if clear else None,
        "clear_margin_masks": clear,
        "top5_overlap": round(overlap / masks, 4),
    }


if __name__ == "__main__":
    sys.exit(main())
