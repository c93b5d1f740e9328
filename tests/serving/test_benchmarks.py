"""The benchmark scripts still run (a small run each, as a real process): numbers rot silently otherwise."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from models.engine.accel import packed_linear

ROOT = Path(__file__).resolve().parents[2]


def test_cpu_side_compares_a_git_refs_batcher_with_this_one(tmp_path: Path) -> None:
    out = tmp_path / "cpu-side.json"
    done = subprocess.run(
        [sys.executable, "benchmarks/cpu_side.py", "--sentences", "600", "--rounds", "1", "--callers", "8",
         "--baseline-ref", "HEAD", "--json-out", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "event loop us/sentence" in done.stdout
    rows = json.loads(out.read_text())["rows"]
    assert [r["path"] for r in rows] == [
        "batcher at HEAD",
        "this batcher, heap as loaded",
        "this batcher, gc.freeze() after loading",
    ]
    assert all(r["callers"] == 8 and r["sentences_per_s"] > 0 and r["loop_us_per_sentence"] > 0 for r in rows)
    assert rows[0]["x_baseline"] == 1.0


def test_cpu_side_without_git_history_says_how_to_give_the_baseline(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "benchmarks/cpu_side.py", "--baseline-ref", "no-such-ref-anywhere", "--sentences", "8"],
        cwd=ROOT, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert done.returncode != 0 and "--baseline-file" in done.stderr and "Traceback" not in done.stderr


@pytest.mark.skipif(not packed_linear.available(), reason="this torch has no oneDNN linear ops")
def test_packed_weights_compares_plain_and_packed_layers_in_one_run(tmp_path: Path) -> None:
    out = tmp_path / "packed.json"
    done = subprocess.run(
        [sys.executable, "benchmarks/packed_weights.py", "--shape", "bert", "--batch-sizes", "1,4", "--rounds", "2",
         "--repeats", "2", "--json-out", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "| sentences per forward | plain ms | packed ms | x plain |" in done.stdout
    data = json.loads(out.read_text())
    assert [r["batch"] for r in data["rows"]] == [1, 4]
    for r in data["rows"]:
        assert r["plain_ms"] > 0 and r["packed_ms"] > 0
        assert r["x_plain"] == pytest.approx(r["plain_ms"] / r["packed_ms"])
    assert data["max_probability_diff"] < 1e-4


def test_soak_samples_the_bots_memory_as_updates_go_by(tmp_path: Path) -> None:
    out = tmp_path / "soak.json"
    done = subprocess.run(
        [sys.executable, "benchmarks/soak.py", "--updates", "200", "--every", "100", "--plain", "20",
         "--json-out", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(out.read_text())
    samples = result["samples"]
    assert [s["updates"] for s in samples] == [0, 100, 200]
    assert all(s["rss_mib"] > 50 for s in samples), "the bot process's RSS, not this one's"
    assert isinstance(result["plain_kib_per_person"], float)
    assert "growth after" in done.stdout and "plain path: 20 new people" in done.stdout


def test_memory_budget_times_the_first_answer_and_reads_the_bots_rss(tmp_path: Path) -> None:
    out = tmp_path / "memory.json"
    done = subprocess.run(
        [sys.executable, "benchmarks/memory_budget.py", "--shape", "bert", "--dtype", "int8", "--predictions", "30",
         "--json-out", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    (result,) = json.loads(out.read_text())["results"]
    assert result["dtype"] == "int8" and result["first_answer_s"] > 0
    after = result["after_30_predictions"]
    assert 50 < after["rss_mib"] <= after["peak_mib"], "the bot process's memory, its peak at least its RSS"


def test_viral_mini_app_compares_the_chat_alone_and_under_mini_app_load(tmp_path: Path) -> None:
    out = tmp_path / "viral.json"
    done = subprocess.run(
        [sys.executable, "benchmarks/viral_mini_app.py", "--chatters", "3", "--mini-app-users", "10",
         "--seconds", "4", "--json-out", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["bot_still_up"] is True
    assert report["chat alone"]["chat_answers"] > 0 and report["chat + Mini App"]["chat_answers"] > 0
    mini_app = report["chat + Mini App"]["mini_app"]
    assert mini_app.get("200", 0) > 0 and mini_app["without_retry_after"] == 0
    assert "chat p95:" in done.stdout
