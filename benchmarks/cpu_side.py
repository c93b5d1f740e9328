"""The batcher's CPU side: an earlier commit's ``models/serving/batcher.py`` against this one, in one run.

With a fast GPU the model is not what limits throughput: the event loop, tokenizing and decoding are (the H200
run plateaued at 8.7k sentences/s while a bert-base forward of 256 sentences took a few milliseconds). This
measures that CPU side on any machine: by default the forward is stubbed out (canned top-5 scores, what an
infinitely fast GPU looks like from the CPU), so what is left is exactly the work this process does per
sentence. ``--forward model`` runs the real model instead (a GPU box: ``--shape bert-base --device cuda``).

Rows, interleaved round by round on the same engine and sentences (medians of ``--rounds``):

* baseline: the batcher at ``--baseline-ref`` (default: the commit before the event-loop work), heap as loaded;
* this batcher, heap as loaded (no ``gc.freeze``);
* this batcher after ``gc.freeze()`` (what ``mlm-bot worker``, Ray replicas and the bot do after loading).

Besides sentences/s it prints the event loop's own CPU time per sentence (``time.thread_time`` on the loop's
thread): one thread, holding the GIL, so on a many-core GPU box it is the ceiling.

    python benchmarks/cpu_side.py                                   # 2-core laptop: about a minute
    python benchmarks/cpu_side.py --forward model --shape bert-base --device cuda --callers 64,256,1024

A machine with the checkout but not its git history (the GPU box of ``benchmarks/gpu_check.sh``) takes the
baseline as a file: ``git show 714e089:models/serving/batcher.py > batcher_baseline.py`` where the history is, then
``--baseline-file batcher_baseline.py`` (``CPU_SIDE_BASELINE=batcher_baseline.py`` for ``gpu_check.sh``).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import importlib.util
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

BEFORE_EVENT_LOOP_WORK = "714e089"


def load_baseline(ref: str, file: str | None):
    """The baseline ``models/serving/batcher.py``: ``file``, or the one at git ``ref``, imported as its own module
    (the rest of ``models`` is this checkout's, so it must be recent enough to share its interfaces)."""
    if file is not None:
        source = Path(file).read_text()
    else:
        for path in ("models/serving/batcher.py", "models/batcher.py"):  # where it lives now; before 2026-12-04
            shown = subprocess.run(
                ["git", "-C", str(ROOT), "show", f"{ref}:{path}"], capture_output=True, text=True, check=False
            )
            if shown.returncode == 0:
                break
        if shown.returncode != 0:
            raise SystemExit(
                f"cannot read models/serving/batcher.py at {ref} ({shown.stderr.strip() or 'no git history here?'}): "
                f"save it with `git show {ref}:models/serving/batcher.py > FILE` where the history is, and pass "
                "--baseline-file FILE"
            )
        source = shown.stdout
    source = _current_imports(source)
    path = Path(tempfile.mkdtemp()) / "batcher_baseline.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("batcher_baseline", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


# Where the modules an older batcher imports live since the packages by role (2026-12-04).
MOVED = {
    "models.engine": "models.engine.core",
    "models.results": "models.engine.results",
    "models.errors": "models.engine.errors",
    "models.device": "models.engine.device",
    "models.heap": "models.engine.accel.heap",
    "models.metrics": "models.serving.worker_metrics",
}


def _current_imports(source: str) -> str:
    """An older batcher's ``from models.X import`` lines, pointed at where those modules live now."""
    pattern = re.compile(r"^(\s*from )(" + "|".join(re.escape(old) for old in MOVED) + r")( import )", re.M)
    return pattern.sub(lambda m: m.group(1) + MOVED[m.group(2)] + m.group(3), source)


class StubForward:
    """The real engine (tokenizer, decoding, everything on the CPU) with the forward replaced by canned scores."""

    def __init__(self, engine) -> None:
        from models.engine.results import MaskScores

        self._engine = engine
        self._mask_scores = MaskScores

    def __getattr__(self, name: str):
        return getattr(self._engine, name)

    def forward(self, batch):
        scores, tokens = (0.41, 0.22, 0.13, 0.07, 0.02), (5, 6, 7, 8, 9)
        return [
            self._mask_scores(
                scores=tuple(scores[: e.top_k] for _ in e.mask_positions),
                token_ids=tuple(tokens[: e.top_k] for _ in e.mask_positions),
            )
            for e in batch
        ]


async def measure(module, engine, sentences: list[str], callers: int, args: argparse.Namespace) -> dict[str, float]:
    from models.bench.benchmark import run_callers
    from models.engine.results import FillMaskRequest

    batcher = module.MicroBatcher(
        engine,
        max_batch_size=args.max_batch_size,
        max_batch_tokens=args.max_batch_tokens,
        max_queue=max(4 * callers, 512),
        request_timeout=600,
    )
    await batcher.start()
    try:
        await run_callers(lambda s: batcher.fill(FillMaskRequest(s)), sentences[:512], callers)  # warm-up
        loop_cpu = time.thread_time()
        latencies, seconds = await run_callers(lambda s: batcher.fill(FillMaskRequest(s)), sentences, callers)
        loop_cpu = time.thread_time() - loop_cpu
    finally:
        await batcher.close()
    return {"throughput": len(latencies) / seconds, "loop_us": loop_cpu / len(latencies) * 1e6}


async def run(args: argparse.Namespace) -> list[dict[str, object]]:
    import models.serving.batcher as current
    from models.bench.random_models import BUILDERS
    from models.bench.random_models import sentences as make_sentences
    from models.engine.core import FillMaskEngine

    baseline = load_baseline(args.baseline_ref, args.baseline_file)
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = BUILDERS[args.shape](Path(tmp) / args.shape)
        engine = FillMaskEngine.load(
            model_dir,
            device=args.device,
            max_batch_size=args.max_batch_size,
            max_batch_tokens=args.max_batch_tokens,
        )
    sentences = make_sentences(args.sentences, seed=1, mask=engine.mask_token)
    served = StubForward(engine) if args.forward == "stub" else engine
    variants = [
        (f"batcher at {args.baseline_file or args.baseline_ref}", baseline, False),
        ("this batcher, heap as loaded", current, False),
        ("this batcher, gc.freeze() after loading", current, True),
    ]
    runs: dict[tuple[str, int], list[dict[str, float]]] = {}
    for round_ in range(args.rounds):
        for callers in args.callers:
            for label, module, freeze in variants:
                if freeze:
                    gc.collect()
                    gc.freeze()
                try:
                    runs.setdefault((label, callers), []).append(
                        await measure(module, served, sentences, callers, args)
                    )
                finally:
                    gc.unfreeze()
        print(f"round {round_ + 1}/{args.rounds} done", file=sys.stderr)
    rows = []
    for callers in args.callers:
        base = statistics.median(r["throughput"] for r in runs[(variants[0][0], callers)])
        for label, _, _ in variants:
            got = runs[(label, callers)]
            throughput = statistics.median(r["throughput"] for r in got)
            rows.append(
                {
                    "path": label,
                    "callers": callers,
                    "sentences_per_s": round(throughput, 1),
                    "loop_us_per_sentence": round(statistics.median(r["loop_us"] for r in got), 1),
                    "x_baseline": round(throughput / base, 2),
                    "runs": [round(r["throughput"]) for r in got],
                }
            )
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--baseline-ref", default=BEFORE_EVENT_LOOP_WORK, help="git ref of the baseline batcher")
    parser.add_argument("--baseline-file", help="the baseline batcher as a file (where there is no git history)")
    parser.add_argument("--forward", choices=["stub", "model"], default="stub")
    parser.add_argument("--shape", choices=["bert", "bert-base"], default="bert", help="random model (bert = tiny)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--sentences", type=int, default=20_000)
    parser.add_argument("--callers", type=lambda s: [int(c) for c in s.split(",")], default=[64, 256])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--max-batch-size", type=int, default=256)
    parser.add_argument("--max-batch-tokens", type=int, default=65_536)
    parser.add_argument("--json-out", help="also write the rows as JSON to this file")
    args = parser.parse_args()

    from models.bench.benchmark import describe_device

    rows = asyncio.run(run(args))
    print(f"\n{describe_device(args.device)}; forward: {args.forward}, shape {args.shape}, {args.sentences} sentences")
    print("\n| path | callers | sentences/s | event loop us/sentence | x baseline |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for r in rows:
        print(
            f"| {r['path']} | {r['callers']} | {r['sentences_per_s']:,.0f} | {r['loop_us_per_sentence']:.1f} "
            f"| {r['x_baseline']:.2f}x |"
        )
    if args.json_out:
        Path(args.json_out).write_text(json.dumps({"device": describe_device(args.device), "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
