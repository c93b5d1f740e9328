"""The engine's forward with plain linear layers against oneDNN-packed ones, in one process, interleaved.

One engine, loaded without packing; its encoder's layers are then swapped between the plain ``nn.Linear`` and
the ``PackedLinear`` of ``models/engine/accel/packed_linear.py`` round after round, so both sides see the same
machine, the same threads and the same inputs. Measures ``engine.forward`` (encoder, head at the masks, top-k)
per batch size, reports medians and the ratio, and the largest difference in the returned probabilities.

    python benchmarks/packed_weights.py                     # bert-base shape, random weights
    python benchmarks/packed_weights.py --dtype bfloat16
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shape", default="bert-base", help="random model shape (models.random_models.BUILDERS)")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--batch-sizes", default="1,8,32", help="comma-separated sentences per forward")
    parser.add_argument("--rounds", type=int, default=5, help="plain/packed alternations")
    parser.add_argument("--repeats", type=int, default=5, help="forwards per side and round")
    parser.add_argument("--json-out")
    args = parser.parse_args()

    import torch

    from models.bench.random_models import BUILDERS, sentences
    from models.engine.accel import packed_linear
    from models.engine.core import FillMaskEngine
    from models.engine.results import FillMaskRequest

    if not packed_linear.available():
        print("this torch has no oneDNN linear ops: nothing to compare", file=sys.stderr)
        return 1
    sizes = [int(b) for b in args.batch_sizes.split(",") if b.strip()]
    with tempfile.TemporaryDirectory() as tmp:
        model = BUILDERS[args.shape](Path(tmp) / args.shape)
        engine = FillMaskEngine.load(model, device="cpu", dtype=args.dtype, packed_weights=False)
    texts = sentences(max(sizes), seed=1, mask=engine.mask_token)
    batches = {n: engine.prepare_batch([FillMaskRequest(t) for t in texts[:n]]) for n in sizes}

    def on_model_thread() -> dict:
        plain = packed_linear.pack_linears(engine.forwarder.encoder)  # (parent, name, plain layer)
        packed = [(parent, name, getattr(parent, name)) for parent, name, _ in plain]
        times: dict[tuple[str, int], list[float]] = {(side, n): [] for side in ("plain", "packed") for n in sizes}
        diff = 0.0
        for _ in range(args.rounds):
            for side, layers in (("plain", plain), ("packed", packed)):
                for parent, name, layer in layers:
                    setattr(parent, name, layer)
                for n in sizes:
                    engine.forward(batches[n])  # not timed: first call of this round's layers
                    for _ in range(args.repeats):
                        started = time.perf_counter()
                        engine.forward(batches[n])
                        times[side, n].append(time.perf_counter() - started)
            for parent, name, layer in plain:
                setattr(parent, name, layer)
            reference = engine.forward(batches[max(sizes)])
            for parent, name, layer in packed:
                setattr(parent, name, layer)
            for a, b in zip(reference, engine.forward(batches[max(sizes)]), strict=True):
                for sa, sb in zip(a.scores, b.scores, strict=True):
                    diff = max(diff, max(abs(x - y) for x, y in zip(sa, sb, strict=True)))
        return {"times": times, "diff": diff, "layers": len(packed)}

    measured = engine.model_thread.submit(on_model_thread).result()  # where the engine's torch work runs
    rows = []
    for n in sizes:
        plain_ms = statistics.median(measured["times"]["plain", n]) * 1000
        packed_ms = statistics.median(measured["times"]["packed", n]) * 1000
        rows.append({"batch": n, "plain_ms": plain_ms, "packed_ms": packed_ms, "x_plain": plain_ms / packed_ms})
    print(
        f"{args.shape}, {args.dtype}, {measured['layers']} layers packed, {torch.get_num_threads()} torch threads, "
        f"medians of {args.rounds} x {args.repeats} forwards per side, interleaved\n"
    )
    print("| sentences per forward | plain ms | packed ms | x plain |\n| ---: | ---: | ---: | ---: |")
    for r in rows:
        print(f"| {r['batch']} | {r['plain_ms']:.1f} | {r['packed_ms']:.1f} | {r['x_plain']:.2f}x |")
    print(f"\nlargest difference in a returned probability: {measured['diff']:.1e}")
    if args.json_out:
        Path(args.json_out).write_text(
            json.dumps({"settings": vars(args), "rows": rows, "max_probability_diff": measured["diff"]}, indent=2)
        )
    engine.model_thread.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
