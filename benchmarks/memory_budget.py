"""The bot's memory with a bert-base-sized model, and the time from ``mlm-bot run`` to its first answer.

For each ``--dtype`` (default: int8, bfloat16, float32) a real ``mlm-bot run`` process (fake Bot API, polling, the
model in-process, SQLite) is started on a bert-base-shaped model saved as safetensors (random weights: the hub is
out of reach; the size is what matters). The clock starts when the process is spawned and stops when the first
answer to a [MASK] sentence reaches the fake Bot API. Then ``--predictions`` sentences from 100 people are
answered, and the process's resident memory is read from /proc: now (RSS) and its peak (VmHWM).

    python benchmarks/memory_budget.py                        # int8, bfloat16, float32; 1,000 predictions each
    python benchmarks/memory_budget.py --dtype int8 --shape bert --predictions 50   # quick, tiny model
    python benchmarks/memory_budget.py --dtype int8 --runtime onnxruntime     # MODEL_RUNTIME=onnxruntime

With ``--runtime onnxruntime`` each precision runs twice: the first start exports the model to ONNX (into a
cache in the run's folder), the second finds the export cached.

Needs the test extra (the fake Bot API lives in ``tests/``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.viral_mini_app import SENTENCES, Replies  # noqa: E402

PEOPLE = 100


def memory_mib(pid: int) -> dict[str, float]:
    """RSS now and its peak (VmHWM), in MiB."""
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            out["rss_mib" if key == "VmRSS" else "peak_mib"] = round(int(value.split()[0]) / 1024, 1)
    return out


async def measure(model: Path, dtype: str, predictions: int, tmp: Path, runtime: str = "torch") -> dict:
    from tests.support.bot_harness import free_port
    from tests.support.fake_telegram import TOKEN, FakeTelegram

    fake = FakeTelegram()
    async with fake.running():
        env = dict(
            os.environ, TELEGRAM_BOT_TOKEN=TOKEN, TELEGRAM_API_BASE_URL=fake.url, MODEL_NAME=str(model),
            MODEL_DTYPE=dtype, MODEL_DEVICE="cpu", DATABASE_URL=f"sqlite+aiosqlite:///{tmp}/{time.time_ns()}.sqlite3",
            MODEL_WORKER_URL="", LOG_LEVEL="WARNING", METRICS_PORT=str(free_port()), PREDICTIONS_PER_MINUTE="1000",
            ACTIONS_PER_MINUTE="1000", PYTHONPATH=str(ROOT), MODEL_RUNTIME=runtime, MODEL_ONNX_CACHE=str(tmp / "onnx"),
        )  # fmt: skip
        # A database per run: each fake Bot API numbers its updates from 1, and the bot drops updates it has handled.
        exports_before = set((tmp / "onnx").glob("[!.]*"))
        replies = Replies(fake)
        watcher = asyncio.create_task(replies.run())
        started = time.monotonic()
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bot.cli", "run", env=env, cwd=tmp,
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
        )  # fmt: skip
        try:
            first = replies.expect(1)
            user = fake.user(1, "First")
            # The first sentence goes in as soon as the bot polls; its answer waits for the model to load.
            await fake.wait_for(lambda f: bool(f.sent("deleteWebhook")) or process.returncode is not None, 600)
            await fake.send_text(user, SENTENCES[0])
            await asyncio.wait_for(first.wait(), 600)
            first_answer_s = time.monotonic() - started
            after_load = memory_mib(process.pid)
            sent = 0
            while sent < predictions:
                wave = []
                for i in range(min(PEOPLE, predictions - sent)):
                    uid = 100 + i
                    wave.append(replies.expect(uid).wait())
                    await fake.send_text(fake.user(uid, f"P{i}"), SENTENCES[(sent + i) % len(SENTENCES)])
                await asyncio.wait_for(asyncio.gather(*wave), 600)
                sent += len(wave)
            await asyncio.sleep(1)
            exported = set((tmp / "onnx").glob("[!.]*")) != exports_before
            result = {
                "dtype": dtype,
                "runtime": runtime + (" (export cached)" if runtime != "torch" and not exported else ""),
                "first_answer_s": round(first_answer_s, 1),
                "after_first_answer": after_load,
                f"after_{predictions}_predictions": memory_mib(process.pid),
            }
        finally:
            watcher.cancel()
            process.send_signal(signal.SIGTERM)
            await asyncio.wait_for(process.wait(), 60)
    return result


def main() -> None:
    from models.bench.random_models import BUILDERS

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dtype", default="int8,bfloat16,float32", help="comma-separated MODEL_DTYPE values")
    parser.add_argument("--shape", default="bert-base", choices=["bert-base", "bert"])
    parser.add_argument("--predictions", type=int, default=1_000)
    parser.add_argument("--runtime", default="torch", choices=["torch", "onnxruntime"], help="MODEL_RUNTIME")
    parser.add_argument("--json-out")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp())
    model = BUILDERS[args.shape](tmp / "model")
    results = []
    for dtype in [d.strip() for d in args.dtype.split(",") if d.strip()]:
        for _ in range(2 if args.runtime == "onnxruntime" else 1):
            result = asyncio.run(measure(model, dtype, args.predictions, tmp, args.runtime))
            print(json.dumps(result), flush=True)
            results.append(result)
    if args.json_out:
        Path(args.json_out).write_text(json.dumps({"shape": args.shape, "results": results}, indent=1))


if __name__ == "__main__":
    main()
