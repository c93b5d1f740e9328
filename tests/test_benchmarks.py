"""The benchmark scripts still run (a small run each, as a real process): numbers rot silently otherwise."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


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
