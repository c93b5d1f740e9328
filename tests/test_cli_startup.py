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
    assert "--model=./models/my-bert" in line and "no such folder" in line and str(tmp_path) in line


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
    assert "--model=bert-base-uncased" in line and "unreachable" in line
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


def test_a_missing_token_is_reported_before_torch_or_transformers_is_imported(tmp_path: Path) -> None:
    """Importing torch and transformers takes seconds: a newcomer's missing token must not wait for them."""
    check = (
        "import sys\n"
        "from bot.cli import main\n"
        "code = main(['run'])\n"
        "heavy = sorted(m for m in ('torch', 'transformers', 'telegram.ext') if m in sys.modules)\n"
        "print('imported:', heavy)\n"
        "sys.exit(code)\n"
    )
    environ = {k: v for k, v in os.environ.items() if k != "TELEGRAM_BOT_TOKEN"}
    done = subprocess.run(
        [sys.executable, "-c", check], capture_output=True, text=True, timeout=120, env=environ, cwd=tmp_path,
        check=False,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert "TELEGRAM_BOT_TOKEN is not set" in one_error_line(done)
    assert "imported: []" in done.stdout


def test_a_configuration_error_in_wait_mode_says_misconfigured_on_healthz_until_stopped(tmp_path: Path) -> None:
    """ON_CONFIG_ERROR=wait (the image's setting): no exit into a restart loop. The error is printed once, /healthz
    (and so Docker's healthcheck, ``mlm-bot health``) answers 503 "misconfigured" with the problem, and a SIGTERM
    ends it with code 2 at once. Without the setting the same error exits 2 (the test above)."""
    import json
    import signal
    import time

    port = closed_port()
    environ = {k: v for k, v in os.environ.items() if k not in ("TELEGRAM_BOT_TOKEN", "LOG_LEVEL")}
    environ.update(ON_CONFIG_ERROR="wait", METRICS_PORT=str(port))
    process = subprocess.Popen(
        [MLM_BOT, "run"], cwd=tmp_path, env=environ, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            health = run("health", cwd=tmp_path, METRICS_PORT=str(port))
            if "misconfigured" in health.stdout or time.monotonic() > deadline or process.poll() is not None:
                break
            time.sleep(0.2)
        assert process.poll() is None, "it waits instead of exiting"
        assert health.returncode == 1 and health.stdout.startswith("unhealthy: ")
        answer = json.loads(health.stdout.removeprefix("unhealthy: "))
        assert answer["status"] == "misconfigured" and "TELEGRAM_BOT_TOKEN is not set" in answer["problem"]
        time.sleep(1.0)
        assert process.poll() is None
        started = time.monotonic()
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=10)
    finally:
        process.kill()
    assert process.returncode == 2 and time.monotonic() - started < 5
    assert stderr.count("TELEGRAM_BOT_TOKEN is not set") == 1 and "Traceback" not in stderr, stderr
    assert "ON_CONFIG_ERROR=wait" in stderr  # the log says why it did not exit


def test_stats_on_an_empty_log_prints_no_library_chatter_and_a_chart_from_zero(tmp_path: Path) -> None:
    """``mlm-bot stats --png`` on a fresh (upgraded, empty) database: the statistics and one line about the file, no
    Alembic set-up lines or matplotlib INFO; the empty week's chart runs from 0 (not -0.04 to 0.04)."""
    import asyncio

    from bot.analytics import chart_figure, gather_stats
    from bot.storage import Database, Repository

    url = f"sqlite+aiosqlite:///{tmp_path}/log.sqlite3"
    assert run("db", "upgrade", DATABASE_URL=url).returncode == 0
    done = run("stats", "--png", str(tmp_path / "stats.png"), DATABASE_URL=url, LOG_LEVEL="INFO")
    assert done.returncode == 0, done.stderr
    assert "chart written to" in done.stdout
    assert "matplotlib" not in done.stderr and "Context impl" not in done.stderr, done.stderr

    async def empty_week():
        database = Database(url)
        try:
            return await gather_stats(Repository(database), days=7)
        finally:
            await database.close()

    axes = chart_figure(asyncio.run(empty_week()), "empty").axes[0]
    assert axes.get_ylim() == (0.0, 1.0)
    assert all(label.get_text() for label in axes.get_xticklabels()), "the days are named under the bars"


def test_read_only_commands_never_migrate_and_say_what_to_do(tmp_path: Path) -> None:
    """``stats`` and ``export`` read; only ``mlm-bot run`` (under the active process's lock) and ``db upgrade``
    change the schema. On an older schema, or none, they say so and leave it as it is."""
    import sqlite3

    url = f"sqlite+aiosqlite:///{tmp_path}/log.sqlite3"
    assert run("db", "upgrade", "0009", DATABASE_URL=url).returncode == 0
    for command in (["stats"], ["export", "--format", "csv"]):
        done = run(*command, DATABASE_URL=url)
        assert done.returncode == 2 and "older than this version" in done.stderr, done.stderr
        assert "mlm-bot db upgrade" in done.stderr and "Traceback" not in done.stderr
    version = sqlite3.connect(tmp_path / "log.sqlite3").execute("SELECT version_num FROM alembic_version").fetchone()
    assert version == ("0009",), "left as it was"
    fresh = run("stats", DATABASE_URL=f"sqlite+aiosqlite:///{tmp_path}/none.sqlite3")
    assert fresh.returncode == 2 and "no tables yet" in fresh.stderr
