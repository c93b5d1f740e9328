"""A newcomer's first hour, in a fresh folder and offline (issue 32): the playground loads its model before it
prints an address, every setting a model's name came from is the one named, one-shot commands print their answer
and not the loading chatter, `mlm-bot run` checks the model before waiting for Telegram and says what to look at
when Telegram does not answer, and a database URL whose driver is missing is one line naming what to install."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tests.support.bot_harness import free_port

MLM_BOT = str(Path(sys.executable).with_name("mlm-bot"))
TOKEN = "123456:ABCDEFGHIJKLMNOPQRSTUVWXYZabcdef"


def environment(**extra: str) -> dict[str, str]:
    drop = ("LOG_LEVEL", "MODEL_WORKER_URL", "TELEGRAM_BOT_TOKEN", "DATABASE_URL")
    return {**{k: v for k, v in os.environ.items() if k not in drop}, "HF_HUB_OFFLINE": "1", **extra}


def run(*args: str, cwd: Path, timeout: float = 120, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [MLM_BOT, *args], capture_output=True, text=True, timeout=timeout, env=environment(**env), cwd=cwd, check=False
    )


def only_line(text: str) -> str:
    lines = [line for line in text.splitlines() if line.strip()]
    assert len(lines) == 1, text
    return lines[0]


def test_a_playground_whose_model_cannot_load_is_one_line_and_prints_no_address(tmp_path: Path) -> None:
    done = run("playground", "--model", str(tmp_path / "my-bert"), "--port", str(free_port()), cwd=tmp_path)
    assert done.returncode == 1
    assert "Traceback" not in done.stderr and "http://" not in done.stdout
    line = only_line(done.stderr)
    assert line.startswith("error: --model=") and "no such folder" in line  # the option used, not MODEL_NAME


def test_the_playground_prints_its_address_once_the_page_answers(bert_dir: Path, tmp_path: Path) -> None:
    port = free_port()
    process = subprocess.Popen(
        [MLM_BOT, "playground", "--model", str(bert_dir), "--port", str(port)],
        cwd=tmp_path, env=environment(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        first = process.stdout.readline()  # blocks until it prints: the model has loaded by then
        assert first.startswith(f"the playground: http://127.0.0.1:{port}/app"), first
        assert httpx.get(f"http://127.0.0.1:{port}/app", timeout=5).status_code == 200, "printed before it served"
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=30)
    assert process.returncode == 0


def test_predict_prints_the_answer_and_nothing_else_by_default(bert_dir: Path, tmp_path: Path) -> None:
    done = run("predict", "the [MASK] sat .", "--model", str(bert_dir), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stderr == "", "no INFO lines, no loading bar"
    assert "→" in done.stdout


def test_run_checks_the_model_before_waiting_for_an_unreachable_telegram(tmp_path: Path) -> None:
    """Telegram out of reach and a mistyped model folder: the folder is reported at once (before, the bot retried
    Telegram forever and never got to the model)."""
    started = time.monotonic()
    done = run(
        "run", cwd=tmp_path, timeout=60, TELEGRAM_BOT_TOKEN=TOKEN, TELEGRAM_API_BASE_URL="http://127.0.0.1:9/bot",
        MODEL_NAME=str(tmp_path / "my-bert"), DATABASE_URL=f"sqlite+aiosqlite:///{tmp_path}/bot.sqlite3",
        METRICS_PORT="0",
    )  # fmt: skip
    assert done.returncode == 2 and time.monotonic() - started < 30
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "MODEL_NAME=" in errors[0] and "no such folder" in errors[0], done.stderr
    assert "Traceback" not in done.stderr


def test_an_unreachable_telegram_says_what_to_look_at(bert_dir: Path, tmp_path: Path) -> None:
    process = subprocess.Popen(
        [MLM_BOT, "run"], cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env=environment(
            TELEGRAM_BOT_TOKEN=TOKEN, TELEGRAM_API_BASE_URL="http://127.0.0.1:9/bot", MODEL_NAME=str(bert_dir),
            DATABASE_URL=f"sqlite+aiosqlite:///{tmp_path}/bot.sqlite3", METRICS_PORT="0",
        ),
    )  # fmt: skip
    try:
        lines: list[str] = []
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not any("Telegram is unreachable" in line for line in lines):
            lines.append(process.stdout.readline())
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=30)
    (unreachable,) = [line for line in lines if "Telegram is unreachable" in line]
    assert "HTTPS_PROXY" in unreachable and "TELEGRAM_API_BASE_URL" in unreachable and "network" in unreachable


def test_a_database_driver_that_is_not_installed_is_one_line_naming_the_extra(tmp_path: Path) -> None:
    """asyncpg is the postgres extra's: without it (hidden here), `mlm-bot stats` and `mlm-bot run` say how to
    install it, and never repeat the URL's password."""
    url = "postgresql+asyncpg://bot:hunter2@127.0.0.1:5432/mlmbot"
    hide_asyncpg = "import sys; sys.modules['asyncpg'] = None\nfrom bot.cli import main\nsys.exit(main(sys.argv[1:]))"
    for command in ("stats", "run"):
        done = subprocess.run(
            [sys.executable, "-c", hide_asyncpg, command], capture_output=True, text=True, timeout=120, cwd=tmp_path,
            env=environment(DATABASE_URL=url, TELEGRAM_BOT_TOKEN=TOKEN), check=False,
        )  # fmt: skip
        assert done.returncode == 2, done.stderr
        line = only_line(done.stderr)
        assert line.startswith("error: DATABASE_URL: ") and "asyncpg" in line and '"mlm-bot[postgres]"' in line
        assert "hunter2" not in done.stderr and "Traceback" not in done.stderr


def test_a_database_that_does_not_answer_is_one_line(tmp_path: Path) -> None:
    closed = free_port()
    done = run("stats", cwd=tmp_path, DATABASE_URL=f"postgresql+asyncpg://bot:hunter2@127.0.0.1:{closed}/mlmbot")
    assert done.returncode == 1
    line = only_line(done.stderr)
    assert line.startswith("error: the database (DATABASE_URL) does not answer") and "hunter2" not in line
