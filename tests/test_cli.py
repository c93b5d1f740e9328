"""The ``mlm-bot`` command line, run as a real process: predict, worker, bench."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from models.engine.core import FillMaskEngine
from tests.support.hf_compare import assert_same_hf

MLM_BOT = str(Path(sys.executable).with_name("mlm-bot"))  # the installed console script


def run(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    env = dict(os.environ, MODEL_WORKER_URL="")
    return subprocess.run([MLM_BOT, *args], capture_output=True, text=True, timeout=timeout, env=env, check=False)


def test_predict_json_is_the_hf_schema(bert_dir: Path, bert_engine: FillMaskEngine) -> None:
    done = run("predict", "the cat sat on the [MASK] .", "--top-k", "3", "--json", "--model", str(bert_dir))
    assert done.returncode == 0, done.stderr
    assert_same_hf(json.loads(done.stdout), bert_engine.fill("the cat sat on the [MASK] .", top_k=3).to_hf())


def test_predict_prints_a_readable_table(bert_dir: Path, bert_engine: FillMaskEngine) -> None:
    done = run("predict", "the [MASK] sat on the [MASK] .", "--model", str(bert_dir))
    assert done.returncode == 0, done.stderr
    best = bert_engine.fill("the [MASK] sat on the [MASK] .").masks
    assert "Mask 1 of 2" in done.stdout and "Mask 2 of 2" in done.stdout
    assert best[0][0].token_str in done.stdout and "%" in done.stdout
    assert bert_engine.fill_joint("the [MASK] sat on the [MASK] .").sequence in done.stdout


def test_predict_explains_a_mistake_and_exits_2(bert_dir: Path) -> None:
    done = run("predict", "no mask here", "--model", str(bert_dir))
    assert done.returncode == 2
    assert "[MASK]" in done.stderr and "Traceback" not in done.stderr


def test_worker_serves_and_stops_cleanly_on_sigterm(bert_dir: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = dict(os.environ, MODEL_NAME=str(bert_dir))
    process = subprocess.Popen(
        [MLM_BOT, "worker", "--port", str(port)], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/readyz").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert process.poll() is None and time.monotonic() < deadline, "worker did not become ready"
            time.sleep(0.1)
        r = httpx.post(f"http://127.0.0.1:{port}/v1/fill-mask", json={"inputs": "the [MASK] sat ."})
        assert r.status_code == 200 and len(r.json()) == 5
    finally:
        process.send_signal(signal.SIGTERM)
        output = process.communicate(timeout=30)[0]
    assert process.returncode == 0, output


def test_bench_measures_baseline_batcher_and_http_in_one_run(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    done = run(
        "bench", "--shape", "bert", "--sentences", "24", "--concurrency", "1,4", "--rounds", "2",
        "--json-out", str(out), timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "x baseline" in done.stdout and "device: CPU" in done.stdout and "medians of 2 rounds" in done.stdout
    assert "(round 2/2)" in done.stderr
    data = json.loads(out.read_text())
    paths = [r["path"] for r in data["results"]]
    assert any(p.startswith("batcher") for p in paths) and "http worker" in paths
    assert {r["concurrency"] for r in data["results"]} == {1, 4}
    assert all(r["sentences"] == 24 and len(r["x_baseline_runs"]) == 2 for r in data["results"])
    assert data["baseline"]["sentences"] == 24 and data["baseline"]["x_baseline"] == 1.0
    assert "cpu_bf16" in data["environment"]
    assert data["settings"]["packed_weights"] == "auto" and isinstance(data["packed_linear_layers"], int)
    if data["packed_linear_layers"]:  # fp32 on a CPU that packs: the decoder's product split across the threads
        assert data["decoder_slices"] >= 2 and f"the decoder in {data['decoder_slices']} slices" in done.stderr
    assert len(data["rounds"]) == 2 and all(len(r["results"]) == len(paths) for r in data["rounds"])
    first = data["rounds"][0]
    assert data["results"][0]["x_baseline_runs"][0] == pytest.approx(
        first["results"][0]["sentences_per_s"] / (first["baseline"]["sentences"] / first["baseline"]["seconds"])
    )


def test_bench_puts_int8_beside_onnx_runtime_in_the_same_rounds(tmp_path: Path) -> None:
    pytest.importorskip("onnxruntime")
    out = tmp_path / "bench.json"
    done = run(
        "bench", "--shape", "bert", "--dtype", "int8", "--sentences", "16", "--concurrency", "1,4", "--no-http",
        "--rounds", "2", "--onnxruntime", "on", "--json-out", str(out), timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    data = json.loads(out.read_text())
    # what the engine ran: the tiny BERT's two layers lean, its linear layers (and the decoder) in int8
    assert data["lean_layers"] == 2 and data["int8_linear_layers"] > 0
    assert "2 lean layers" in done.stderr
    rows = {(r["path"], r["concurrency"]): r for r in data["results"]}
    assert set(rows) == {
        ("batcher, int8", 1), ("batcher, int8", 4),
        ("ONNX Runtime fp32, one call per sentence", 1), ("ONNX Runtime fp32, 4 sentences per call", 4),
        ("ONNX Runtime int8, one call per sentence", 1), ("ONNX Runtime int8, 4 sentences per call", 4),
    }  # fmt: skip
    assert all(r["sentences"] == 16 and len(r["x_baseline_runs"]) == 2 for r in rows.values())
    assert "| ONNX Runtime int8, one call per sentence | 1 |" in done.stdout
    # The engine against ONNX Runtime of its own precision, each round's ratio taken within that round.
    versus = {(v["path"], v["against"], v["concurrency"]): v for v in data["x_onnxruntime"]}
    assert set(versus) == {("batcher, int8", "ONNX Runtime int8", 1), ("batcher, int8", "ONNX Runtime int8", 4)}
    lone, ort = rows[("batcher, int8", 1)], rows[("ONNX Runtime int8, one call per sentence", 1)]
    assert versus[("batcher, int8", "ONNX Runtime int8", 1)]["x_runs"] == pytest.approx(
        [a / b for a, b in zip(lone["runs"], ort["runs"], strict=True)]
    )
    assert "batcher, int8 against ONNX Runtime int8, 1 caller: " in done.stdout


def test_bench_measures_the_engine_on_onnx_runtime(tmp_path: Path) -> None:
    pytest.importorskip("onnxruntime")
    out = tmp_path / "bench.json"
    done = run(
        "bench", "--shape", "bert", "--dtype", "int8", "--runtime", "onnxruntime", "--sentences", "8",
        "--concurrency", "1,4", "--no-http", "--onnxruntime", "off", "--json-out", str(out), timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    data = json.loads(out.read_text())
    assert data["settings"]["runtime"] == "onnxruntime" and "the model on ONNX Runtime (int8)" in done.stderr
    assert {(r["path"], r["concurrency"]) for r in data["results"]} == {
        ("batcher, int8, on ONNX Runtime", 1), ("batcher, int8, on ONNX Runtime", 4),
    }  # fmt: skip


def test_onnx_runtime_rows_take_the_same_top_five_as_a_full_sort() -> None:
    import numpy as np

    from models.bench.onnx_runtime import top_candidates

    logits = np.random.default_rng(0).normal(size=(7, 3000)).astype(np.float32)
    logits[3, 10:20] = 9.0  # a tie among the best: still the best five, best first
    probs, top = top_candidates(logits, 5)
    assert np.allclose(probs.sum(-1), 1.0, atol=1e-5)
    full = np.argsort(-probs, axis=-1, kind="stable")[:, :5]
    assert np.array_equal(np.take_along_axis(probs, top, -1), np.take_along_axis(probs, full, -1))
    assert np.array_equal(top[[0, 1, 2, 4, 5, 6]], full[[0, 1, 2, 4, 5, 6]])
    assert set(top[3]) <= set(range(10, 20))
    assert top_candidates(logits[:, :3], 5)[1].shape == (7, 3)  # fewer words than asked for: all of them


def test_bench_rejects_zero_rounds() -> None:
    done = run("bench", "--rounds", "0", timeout=60)
    assert done.returncode == 2 and "must be 1 or more" in done.stderr and "Traceback" not in done.stderr


def test_bench_ratios_pair_each_round_with_its_own_baseline() -> None:
    """A machine that slows down mid-run slows the baseline and the batcher alike: the median of the per-round
    ratios (5x here) is what the code is worth; the ratio of the medians (60/14 = 4.3x) mixes the rounds."""
    from models.bench.benchmark import Measurement, summarize

    def m(path: str, throughput: float) -> Measurement:
        return Measurement(path, 1 if path == "baseline" else 32, 100, 100 / throughput, 1.0, 2.0)

    rounds = [(m("baseline", b), [m("batcher", x)]) for b, x in [(10, 50), (20, 60), (14, 70)]]
    base, (batcher,) = summarize(rounds)
    assert batcher.x_baseline == pytest.approx(5.0)
    assert batcher.x_baseline_runs == pytest.approx([5.0, 3.0, 5.0])
    assert batcher.sentences_per_s == pytest.approx(60) and base.sentences_per_s == pytest.approx(14)
    assert base.x_baseline == 1.0 and base.runs == pytest.approx([10, 20, 14])


def test_run_without_a_token_says_how_to_get_one(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "TELEGRAM_BOT_TOKEN"}
    done = subprocess.run(
        [MLM_BOT, "run"], capture_output=True, text=True, timeout=60, env=env, cwd=tmp_path, check=False
    )
    assert done.returncode == 2
    assert "TELEGRAM_BOT_TOKEN is not set" in done.stderr and "@BotFather" in done.stderr
    assert "Traceback" not in done.stderr
    # A folder without .env.example (a wheel, not a checkout) is not sent looking for one; a checkout is.
    assert "TELEGRAM_BOT_TOKEN=<token>" in done.stderr and ".env.example" not in done.stderr
    (tmp_path / ".env.example").write_text("TELEGRAM_BOT_TOKEN=\n")
    done = subprocess.run(
        [MLM_BOT, "run"], capture_output=True, text=True, timeout=60, env=env, cwd=tmp_path, check=False
    )
    assert ".env.example here lists every setting" in done.stderr


def test_db_upgrade_creates_the_schema(tmp_path: Path) -> None:
    import sqlite3

    env = dict(os.environ, DATABASE_URL=f"sqlite+aiosqlite:///{tmp_path}/sub/log.sqlite3")
    done = subprocess.run([MLM_BOT, "db", "upgrade"], capture_output=True, text=True, timeout=60, env=env, check=False)
    assert done.returncode == 0, done.stderr
    tables = {r[0] for r in sqlite3.connect(tmp_path / "sub" / "log.sqlite3").execute("select name from sqlite_master")}
    assert {"users", "interactions", "comment_triggers", "alembic_version"} <= tables


def test_db_backup_copies_the_sqlite_log_while_the_bot_writes(tmp_path: Path) -> None:
    """A complete database even while another connection holds an open write transaction, and never over an
    existing file."""
    import sqlite3
    import threading

    env = dict(os.environ, DATABASE_URL="sqlite+aiosqlite:///data/log.sqlite3")

    def cli(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([MLM_BOT, *args], capture_output=True, text=True, timeout=120, env=env, cwd=tmp_path)

    assert cli("db", "upgrade").returncode == 0
    database = tmp_path / "data" / "log.sqlite3"
    with sqlite3.connect(database) as db:
        db.executemany(
            "INSERT INTO interactions (kind, outcome, created_at) VALUES ('guide', 'ok', '2026-11-28 10:00:00')",
            [()] * 25,
        )
    writing = sqlite3.connect(database, check_same_thread=False)
    writing.execute("BEGIN IMMEDIATE")  # the bot in the middle of a write: not in the copy, and not blocking it
    writing.execute("INSERT INTO interactions (kind, outcome, created_at) VALUES ('x', 'ok', '2026-11-28')")
    done = cli("db", "backup", "backups/monday.sqlite3")
    threading.Thread(target=writing.rollback).start()
    assert done.returncode == 0, done.stderr
    copy = sqlite3.connect(tmp_path / "backups" / "monday.sqlite3")
    assert copy.execute("SELECT count(*) FROM interactions").fetchone() == (25,)
    assert copy.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    again = cli("db", "backup", "backups/monday.sqlite3")
    assert again.returncode == 2 and "exists" in again.stderr
    env["DATABASE_URL"] = "postgresql+asyncpg://bot@localhost/bot"
    other = cli("db", "backup", "x.sqlite3")
    assert other.returncode == 2 and "pg_dump" in other.stderr
