"""A newcomer's first minutes with ``mlm-bot``: one ``error:`` line and a meaningful exit code for every
mistake (no traceback, no minute of retries), ``--version``, ``LOG_LEVEL``, options after the subcommand."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

MLM_BOT = str(Path(sys.executable).with_name("mlm-bot"))


def run(*args: str, cwd: Path | None = None, **env: str) -> subprocess.CompletedProcess:
    environ = {k: v for k, v in os.environ.items() if k not in ("LOG_LEVEL", "MODEL_WORKER_URL")}
    return subprocess.run(
        [MLM_BOT, *args], capture_output=True, text=True, timeout=120, env={**environ, **env}, cwd=cwd, check=False
    )


def one_error_line(done: subprocess.CompletedProcess) -> str:
    assert "Traceback" not in done.stderr, done.stderr
    errors = [line for line in done.stderr.splitlines() if "error:" in line]
    assert len(errors) == 1, done.stderr
    return errors[0]


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_version() -> None:
    done = run("--version")
    assert done.returncode == 0 and done.stdout.startswith("mlm-bot ")


@pytest.mark.parametrize(
    ("args", "env", "says"),
    [
        (["--log-level", "loud", "stats"], {}, "--log-level"),
        (["stats"], {"LOG_LEVEL": "noisy"}, "noisy"),
        (["stats", "--since", "-3"], {}, "--since"),
        (["export", "--since", "zero"], {}, "--since"),
    ],
)
def test_bad_options_are_one_error_line_and_exit_2(args: list[str], env: dict[str, str], says: str) -> None:
    done = run(*args, **env)
    assert done.returncode == 2
    assert says in one_error_line(done)


def test_unknown_migration_revision_is_an_error_line(tmp_path: Path) -> None:
    done = run("db", "upgrade", "abc123", DATABASE_URL=f"sqlite+aiosqlite:///{tmp_path}/log.sqlite3")
    assert done.returncode == 2
    assert "abc123" in one_error_line(done)


def test_mistyped_model_folder_says_no_such_folder(tmp_path: Path) -> None:
    done = run("predict", "the [MASK] sat .", "--model", "./models/my-bert", cwd=tmp_path)
    assert done.returncode == 1
    line = one_error_line(done)
    assert "MODEL_NAME=./models/my-bert" in line and "no such folder" in line and str(tmp_path) in line


def test_unreachable_hub_fails_at_once_and_says_what_to_do(tmp_path: Path) -> None:
    done = run(
        "predict",
        "the [MASK] sat .",
        "--model",
        "bert-base-uncased",
        HF_HUB_OFFLINE="0",
        HF_ENDPOINT=f"http://127.0.0.1:{closed_port()}",
        HF_HOME=str(tmp_path / "empty-cache"),
    )
    assert done.returncode == 1
    line = one_error_line(done)
    assert "MODEL_NAME=bert-base-uncased" in line and "unreachable" in line
    assert "local folder" in line and "HF_HUB_OFFLINE=1" in line


def test_offline_without_the_model_in_the_cache(tmp_path: Path) -> None:
    done = run("predict", "the [MASK] sat .", "--model", "bert-base-uncased", HF_HOME=str(tmp_path / "cache"))
    assert done.returncode == 1
    line = one_error_line(done)
    assert "HF_HUB_OFFLINE=1" in line and "local folder" in line


def test_options_after_the_subcommand_and_the_loading_bar_follow_the_log_level(bert_dir: Path) -> None:
    quiet = run("predict", "the [MASK] sat .", "--model", str(bert_dir), "--log-level", "WARNING")
    assert quiet.returncode == 0, quiet.stderr
    assert "Loading weights" not in quiet.stderr and " INFO " not in quiet.stderr
    chatty = run("predict", "the [MASK] sat .", "--model", str(bert_dir), LOG_LEVEL="info")
    assert chatty.returncode == 0, chatty.stderr
    assert "Loading weights" in chatty.stderr and " INFO " in chatty.stderr
