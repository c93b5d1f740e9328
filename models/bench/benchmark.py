"""``mlm-bot bench``: the naive baseline and this worker, on the same sentences and device, in one run.

* baseline: ``transformers.pipeline("fill-mask")`` called once per sentence, fp32 (how most tutorials serve);
* batcher: the engine behind the micro-batcher, N concurrent callers in this process;
* http: ``mlm-bot worker`` in a separate process, N concurrent HTTP clients.

It prints sentences/s, p50/p99 latency and the throughput ratio to the baseline. Without ``--model`` it
builds a random-weight model of bert-base-uncased's shape (the hub is not needed).

``--rounds N`` repeats the whole sequence (baseline, batcher, HTTP) N times and reports medians: each round's
ratio is taken against that round's own baseline, so a machine that speeds up or slows down during the run
(shared cores, boost clocks) moves both sides of a ratio together, and the spread of the rounds is printed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

# --cuda-graphs / --packed-weights: what each choice means to the engine, and in the worker's environment.
SWITCH = {"auto": None, "on": True, "off": False}
SWITCH_ENV = {"auto": "auto", "on": "1", "off": "0"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", help="hub id or local directory (default: random weights, bert-base shape)")
    parser.add_argument(
        "--shape",
        default="bert-base",
        choices=["bert-base", "bert"],
        help="shape of the random model built when --model is not given (bert = tiny)",
    )
    parser.add_argument("--sentences", type=int, default=256, help="sentences per measurement")
    parser.add_argument("--baseline-sentences", type=int, default=None, help="default: same as --sentences")
    parser.add_argument(
        "--serial-sentences", type=int, default=None, help="sentences for one caller (default: same as --sentences)"
    )
    parser.add_argument("--concurrency", default="1,32", help="comma-separated numbers of concurrent callers")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda")
    parser.add_argument("--dtype", default="auto", help="worker precision (the baseline is always fp32)")
    parser.add_argument(
        "--runtime",
        choices=["torch", "onnxruntime"],
        default="torch",
        help="what runs the engine's model (MODEL_RUNTIME): torch, or onnxruntime (CPU, fp32 or int8)",
    )
    parser.add_argument("--max-batch-size", type=int, default=32)
    parser.add_argument("--max-batch-tokens", type=int, default=16_384)
    parser.add_argument(
        "--cuda-graphs",
        choices=["auto", "on", "off"],
        default="auto",
        help="replay the encoder as CUDA graphs: auto (on CUDA), on, off",
    )
    parser.add_argument(
        "--packed-weights",
        choices=["auto", "on", "off"],
        default="auto",
        help="pack the encoder's weights for oneDNN: auto (on an x86 CPU), on, off",
    )
    parser.add_argument(
        "--onnxruntime",
        choices=["auto", "on", "off"],
        default="auto",
        help="also measure ONNX Runtime fp32 and int8 on the same model: auto (when installed), on, off",
    )
    parser.add_argument("--no-http", action="store_true", help="skip the HTTP measurement")
    parser.add_argument("--ray-serve", action="store_true", help="also measure the API on Ray Serve (mlm-bot serve)")
    parser.add_argument("--ray-replicas", type=int, default=1, help="Ray Serve replicas (with --ray-serve)")
    parser.add_argument("--ray-cpus-per-replica", type=float, default=1.0, help="CPUs each replica reserves")
    parser.add_argument(
        "--rounds", type=_positive, default=1, help="repeat everything N times, interleaved; report medians"
    )
    parser.add_argument("--json-out", help="also write the results as JSON to this file")


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be 1 or more")
    return value


@dataclass
class Measurement:
    path: str
    concurrency: int
    sentences: int
    seconds: float
    p50_ms: float
    p99_ms: float

    @property
    def throughput(self) -> float:
        return self.sentences / self.seconds


@dataclass
class Row:
    """One path at one concurrency over every round: medians, and each round's ratio to its own baseline."""

    path: str
    concurrency: int
    sentences: int
    sentences_per_s: float
    p50_ms: float
    p99_ms: float
    x_baseline: float
    runs: list[float]
    x_baseline_runs: list[float]


def summarize(rounds: list[tuple[Measurement, list[Measurement]]]) -> tuple[Row, list[Row]]:
    """The baseline's row and every other path's, from ``rounds`` of (baseline, results), all rounds measuring
    the same paths in the same order."""

    def row(ms: list[Measurement], bases: list[Measurement]) -> Row:
        ratios = [m.throughput / b.throughput for m, b in zip(ms, bases, strict=True)]
        return Row(
            path=ms[0].path,
            concurrency=ms[0].concurrency,
            sentences=ms[0].sentences,
            sentences_per_s=statistics.median(m.throughput for m in ms),
            p50_ms=statistics.median(m.p50_ms for m in ms),
            p99_ms=statistics.median(m.p99_ms for m in ms),
            x_baseline=statistics.median(ratios),
            runs=[m.throughput for m in ms],
            x_baseline_runs=ratios,
        )

    bases = [b for b, _ in rounds]
    columns = zip(*(results for _, results in rounds), strict=True)
    return row(bases, bases), [row(list(ms), bases) for ms in columns]


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))] * 1000


def _measure(path: str, concurrency: int, latencies: list[float], seconds: float) -> Measurement:
    return Measurement(
        path, concurrency, len(latencies), seconds, _percentile(latencies, 0.5), _percentile(latencies, 0.99)
    )


def bench_baseline(model: str, sentences: list[str], device: str) -> Measurement:
    import torch
    from transformers import pipeline

    from models.engine.device import resolve_device

    torch_device = resolve_device(device)
    fill = pipeline("fill-mask", model=model, device=torch_device, dtype=torch.float32)
    for s in sentences[:3]:
        fill(s)
    latencies = []
    started = time.perf_counter()
    for s in sentences:
        t = time.perf_counter()
        fill(s)
        latencies.append(time.perf_counter() - t)
    return _measure("baseline: HF pipeline, one call per sentence, fp32", 1, latencies, time.perf_counter() - started)


async def run_callers(
    call: Callable[[str], Awaitable[object]], sentences: list[str], concurrency: int
) -> tuple[list[float], float]:
    feed: Iterator[str] = iter(sentences)
    latencies: list[float] = []

    async def caller() -> None:
        for s in feed:
            t = time.perf_counter()
            await call(s)
            latencies.append(time.perf_counter() - t)

    started = time.perf_counter()
    await asyncio.gather(*(caller() for _ in range(concurrency)))
    return latencies, time.perf_counter() - started


async def bench_batcher(engine, sentences: list[str], levels: list[int], args: argparse.Namespace) -> list[Measurement]:
    from models.engine.results import FillMaskRequest
    from models.serving.batcher import MicroBatcher

    batcher = MicroBatcher(
        engine,
        max_batch_size=args.max_batch_size,
        max_batch_tokens=args.max_batch_tokens,
        max_queue=max(levels) * 4,
        request_timeout=600,
    )
    await batcher.start()
    try:
        await run_callers(lambda s: batcher.fill(FillMaskRequest(s)), sentences[:8], 4)  # warm-up
        out = []
        for c in levels:
            latencies, seconds = await run_callers(
                lambda s: batcher.fill(FillMaskRequest(s)), _sample(sentences, c, args), c
            )
            label = f"batcher, {engine.precision}" + (", CUDA graphs" if engine.graphs_active else "")
            label += ", on ONNX Runtime" if engine.forwarder.onnx is not None else ""
            out.append(_measure(label, c, latencies, seconds))
        return out
    finally:
        await batcher.close()


def _sample(sentences: list[str], concurrency: int, args: argparse.Namespace) -> list[str]:
    """One caller goes through ``--serial-sentences`` of them (a fast GPU needs thousands for many callers, and
    one caller through thousands only measures the same latency for longer)."""
    return sentences[: args.serial_sentences] if concurrency == 1 and args.serial_sentences else sentences


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def _worker_process(model: str, args: argparse.Namespace, server: str) -> Iterator[tuple[str, subprocess.Popen]]:
    """``mlm-bot worker`` (``server="worker"``) or ``mlm-bot serve`` (Ray Serve) with the model under test."""
    port = _free_port()
    env = dict(
        os.environ,
        MODEL_NAME=model,
        MODEL_DEVICE=args.device,
        MODEL_DTYPE=args.dtype,
        BATCH_MAX_SIZE=str(args.max_batch_size),
        BATCH_MAX_TOKENS=str(args.max_batch_tokens),
        QUEUE_MAX="100000",
        REQUEST_TIMEOUT_S="600",
        MODEL_CUDA_GRAPHS=SWITCH_ENV[args.cuda_graphs],
        MODEL_PACKED_WEIGHTS=SWITCH_ENV[args.packed_weights],
        MODEL_RUNTIME=args.runtime,
        MODEL_ONNX_CACHE=args.onnx_cache,
    )
    cmd = [sys.executable, "-m", "bot.cli", "--log-level", "WARNING", server, "--port", str(port)]
    if server == "serve":
        cmd += ["--replicas", str(args.ray_replicas), "--cpus-per-replica", str(args.ray_cpus_per_replica)]
    process = subprocess.Popen(cmd, env=env)
    try:
        yield f"http://127.0.0.1:{port}", process
    finally:
        process.terminate()
        try:
            process.wait(60)
        except subprocess.TimeoutExpired:
            process.kill()


MAX_HTTP_CONNECTIONS = 256  # more callers than this share connections (and 1024 sockets hit the default fd limit)


async def bench_http(
    model: str, sentences: list[str], levels: list[int], args: argparse.Namespace, server: str = "worker"
) -> list[Measurement]:
    """The same API served by ``mlm-bot worker`` or by Ray Serve (``server="serve"``). The load comes from
    aiohttp: httpx, which the bot itself uses, tops out at about 350 requests/s per process here and falls to
    100/s with 64 connections, so it would measure the client, not the worker."""
    try:
        import aiohttp
    except ImportError:
        raise SystemExit(
            "the HTTP measurement needs aiohttp: pip install 'mlm-bot[bench]' (or pass --no-http)"
        ) from None

    path = "http worker" if server == "worker" else f"ray serve x{args.ray_replicas}"
    with _worker_process(model, args, server) as (url, process):
        connector = aiohttp.TCPConnector(limit=min(max(levels), MAX_HTTP_CONNECTIONS))
        timeout = aiohttp.ClientTimeout(total=600)
        async with aiohttp.ClientSession(url, connector=connector, timeout=timeout) as session:
            deadline = time.monotonic() + 600
            while True:
                with contextlib.suppress(aiohttp.ClientError):
                    async with session.get("/readyz") as response:
                        if response.status == 200:
                            break
                if process.poll() is not None:
                    raise RuntimeError(f"the worker exited with status {process.returncode} before it was ready")
                if time.monotonic() > deadline:
                    raise RuntimeError("the worker did not become ready")
                await asyncio.sleep(0.5)

            async def call(s: str) -> None:
                async with session.post("/v1/fill-mask", json={"inputs": s}) as response:
                    await response.read()
                    response.raise_for_status()

            await run_callers(call, sentences[:8], 4)
            out = []
            for c in levels:
                latencies, seconds = await run_callers(call, _sample(sentences, c, args), c)
                out.append(_measure(path, c, latencies, seconds))
            return out


def _report(baseline: Row, results: list[Row], device: str, rounds: int) -> str:
    each = rounds > 1
    lines = [
        f"device: {device}"
        + (f"; medians of {rounds} rounds, each ratio against its own round's baseline" if each else ""),
        "",
        "| path | callers | sentences/s | p50 ms | p99 ms | x baseline |"
        + (" x baseline, each round |" if each else ""),
        "| --- | ---: | ---: | ---: | ---: | ---: |" + (" ---: |" if each else ""),
    ]
    for r in [baseline, *results]:
        line = (
            f"| {r.path} | {r.concurrency} | {r.sentences_per_s:,.1f} | {r.p50_ms:.1f} | {r.p99_ms:.1f} | "
            f"{r.x_baseline:.2f}x |"
        )
        if each:
            line += " " + ", ".join(f"{x:.2f}" for x in r.x_baseline_runs) + " |"
        lines.append(line)
    versus = against_onnx_runtime(results)
    if versus:
        lines.append("")
        lines += [
            f"{path} against {other}, {c} caller{'s' if c > 1 else ''}: {ratio:.2f}x"
            + (f" (each round: {', '.join(f'{x:.2f}' for x in runs)})" if each else "")
            for path, other, c, ratio, runs in versus
        ]
    return "\n".join(lines)


def against_onnx_runtime(results: list[Row]) -> list[tuple[str, str, int, float, list[float]]]:
    """Each batcher row against ONNX Runtime's row of the same precision and callers: (path, ONNX Runtime's path,
    callers, the median of the rounds' throughput ratios, each round's ratio). Each ratio is taken within a round,
    so a slower spell of the machine slows both sides of it."""
    short = {"float32": "fp32", "int8": "int8"}
    out = []
    for r in results:
        precision = short.get(r.path.split(", ")[1]) if r.path.startswith("batcher, ") else None
        for other in results:
            if precision and other.concurrency == r.concurrency and other.path.startswith(f"ONNX Runtime {precision},"):
                runs = [a / b for a, b in zip(r.runs, other.runs, strict=True)]
                out.append((r.path, f"ONNX Runtime {precision}", r.concurrency, statistics.median(runs), runs))
    return out


def describe_device(device: str) -> str:
    import platform

    import torch

    from models.engine.device import cpu_bf16_instructions, resolve_device

    d = resolve_device(device)
    if d.type == "cuda":
        return f"{torch.cuda.get_device_name(d)} (torch {torch.__version__})"
    cpu = platform.processor() or platform.machine()
    threads = torch.get_num_threads()
    bf16 = cpu_bf16_instructions()
    native = f", native bf16 ({bf16})" if bf16 else ""
    return f"CPU: {cpu}, {os.cpu_count()} cores, {threads} torch threads{native} (torch {torch.__version__})"


def environment(device: str) -> dict[str, object]:
    """What the figures were measured on, for the JSON report."""
    import platform
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as package_version

    import torch
    import transformers

    from models.engine.device import cpu_bf16_instructions, resolve_device

    d = resolve_device(device)
    info: dict[str, object] = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "cpu": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "cpu_bf16": cpu_bf16_instructions(),
    }
    with contextlib.suppress(PackageNotFoundError):
        info["ray"] = package_version("ray")
    if d.type == "cuda":
        props = torch.cuda.get_device_properties(d)
        info.update(
            gpu=props.name,
            gpu_memory_gib=round(props.total_memory / 2**30, 1),
            compute_capability=f"{props.major}.{props.minor}",
            multiprocessors=props.multi_processor_count,
            cuda=torch.version.cuda,
        )
    return info


def main(args: argparse.Namespace) -> int:
    from models.bench.random_models import BUILDERS
    from models.bench.random_models import sentences as make_sentences
    from models.engine.accel.heap import freeze_loaded_objects
    from models.engine.core import FillMaskEngine

    levels = [int(c) for c in args.concurrency.split(",") if c.strip()]
    with tempfile.TemporaryDirectory() as tmp:
        model = args.model
        if model is None:
            print(f"building a random-weight {args.shape} model ...", file=sys.stderr)
            model = str(BUILDERS[args.shape](Path(tmp) / args.shape))
        # A random model's export is of no use after this run: kept in the run's folder, not in the user's cache.
        args.onnx_cache = str(Path(tmp) / "onnx-cache") if args.model is None else ""
        engine = FillMaskEngine.load(
            model,
            device=args.device,
            dtype=args.dtype,
            cuda_graphs=SWITCH[args.cuda_graphs],
            packed_weights=SWITCH[args.packed_weights],
            max_batch_size=args.max_batch_size,
            max_batch_tokens=args.max_batch_tokens,
            runtime=args.runtime,
            onnx_cache=args.onnx_cache or None,
        )
        freeze_loaded_objects()  # as the worker and the bot do after loading
        sentences = make_sentences(args.sentences, seed=1, mask=engine.mask_token)
        baseline_sentences = sentences[: args.baseline_sentences or args.sentences]
        device = describe_device(args.device)
        lengths = [len(e.input_ids) for e in engine.prepare_batch([_request(s) for s in sentences[:64]])]
        packed_layers = engine.packed_layers
        int8_layers, lean_layers = engine.forwarder.int8_layers, engine.forwarder.lean_layers
        decoder_slices = engine.forwarder.decoder_slices
        what = (
            f"the model on ONNX Runtime ({engine.precision})"
            if engine.forwarder.onnx is not None
            else f"{packed_layers} linear layers packed for oneDNN, {int8_layers} in int8; {lean_layers} lean layers; "
            f"the decoder in {decoder_slices or 'one'} slice{'s' if decoder_slices else ''}"
        )
        print(f"{device}; {statistics.mean(lengths):.1f} tokens per sentence on average; {what}", file=sys.stderr)

        onnx_paths = _onnx_files(model, args, Path(tmp) / "onnx")
        rounds: list[tuple[Measurement, list[Measurement]]] = []
        for round_ in range(args.rounds):
            tag = f" (round {round_ + 1}/{args.rounds})" if args.rounds > 1 else ""
            print(f"measuring the baseline{tag} ...", file=sys.stderr)
            baseline = _baseline_in_subprocess(model, baseline_sentences, args.device)
            print(f"measuring the batcher{tag} ...", file=sys.stderr)
            results = asyncio.run(bench_batcher(engine, sentences, levels, args))
            if onnx_paths:
                print(f"measuring ONNX Runtime{tag} ...", file=sys.stderr)
                results += _onnx_in_subprocess(model, onnx_paths, {c: _sample(sentences, c, args) for c in levels})
            if not args.no_http:
                print(f"measuring over HTTP{tag} ...", file=sys.stderr)
                results += asyncio.run(bench_http(model, sentences, levels, args))
            if args.ray_serve:
                print(f"measuring Ray Serve{tag} ...", file=sys.stderr)
                results += asyncio.run(bench_http(model, sentences, levels, args, server="serve"))
            rounds.append((baseline, results))
        del engine
    base_row, rows = summarize(rounds)
    print(_report(base_row, rows, device, args.rounds))
    if args.json_out:
        Path(args.json_out).write_text(
            json.dumps(
                {
                    "device": device,
                    "environment": environment(args.device),
                    "settings": {k: v for k, v in vars(args).items() if isinstance(v, (str, int, float, bool))},
                    "tokens_per_sentence": statistics.mean(lengths),
                    "packed_linear_layers": packed_layers,
                    "int8_linear_layers": int8_layers,
                    "lean_layers": lean_layers,
                    "decoder_slices": decoder_slices,
                    "baseline": asdict(base_row),
                    "x_onnxruntime": [
                        {"path": p, "against": o, "concurrency": c, "x": x, "x_runs": runs}
                        for p, o, c, x, runs in against_onnx_runtime(rows)
                    ],
                    "results": [asdict(r) for r in rows],
                    "rounds": [
                        {
                            "baseline": asdict(b),
                            "results": [{**asdict(m), "sentences_per_s": m.throughput} for m in results],
                        }
                        for b, results in rounds
                    ],
                },
                indent=2,
            )
        )
    return 0


def _baseline_in_subprocess(model: str, sentences: list[str], device: str) -> Measurement:
    """The baseline runs in a process of its own: torch threads of two different callers in one process
    slow each other down on CPU (see FillMaskEngine), which would handicap whichever runs second."""
    job = json.dumps({"model": model, "sentences": sentences, "device": device})
    done = subprocess.run(
        [sys.executable, "-m", "models.bench.benchmark"], input=job, capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"baseline measurement failed:\n{done.stderr[-4000:]}")
    return Measurement(**json.loads(done.stdout.strip().splitlines()[-1]))


def _onnx_files(model: str, args: argparse.Namespace, out_dir: Path) -> dict[str, str]:
    """The model as ONNX files (fp32, int8) when ONNX Runtime is to be measured, else nothing."""
    from models.bench import onnx_runtime

    if args.onnxruntime == "off" or args.device not in ("auto", "cpu"):
        return {}
    if not onnx_runtime.installed():
        if args.onnxruntime == "on":
            raise SystemExit("--onnxruntime on needs onnx and onnxruntime: pip install 'mlm-bot[bench]'")
        print("ONNX Runtime is not installed: no ONNX Runtime rows (pip install 'mlm-bot[bench]')", file=sys.stderr)
        return {}
    print("exporting the model to ONNX (fp32, then int8) ...", file=sys.stderr)
    return onnx_runtime.run_in_subprocess({"model": model, "export_to": str(out_dir)})


def _onnx_in_subprocess(model: str, paths: dict[str, str], work: dict[int, list[str]]) -> list[Measurement]:
    from models.bench import onnx_runtime

    rows = onnx_runtime.run_in_subprocess({"model": model, "paths": paths, "work": work})
    return [_measure(r["path"], r["concurrency"], r["latencies"], r["seconds"]) for r in rows]


def _request(text: str):
    from models.engine.results import FillMaskRequest

    return FillMaskRequest(text)


if __name__ == "__main__":  # the baseline's own process (see _baseline_in_subprocess)
    _job = json.loads(sys.stdin.read())
    print(json.dumps(asdict(bench_baseline(_job["model"], _job["sentences"], _job["device"]))))
