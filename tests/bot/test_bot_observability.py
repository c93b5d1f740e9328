"""The bot's /healthz and /metrics (polling mode, ``METRICS_PORT``) and its logs (``LOG_FORMAT=json``)."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import subprocess
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from telegram import WebhookInfo

from bot.http.health import POLL_STALE_S, Health
from bot.http.webhook import webhook_problem
from bot.logs import pseudonym, set_pseudonym_key
from bot.runner import StartupError
from bot.storage import Database
from models.serving.client import LocalFillMask
from models.settings import ModelSettings
from tests.support.bot_harness import bot_settings, eventually, free_port, running_bot
from tests.support.chats import lesson_started
from tests.support.fake_telegram import TOKEN, FakeTelegram
from tests.support.processes import MLM_BOT, bot_process_env, start_bot_process


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Prometheus' text format, parsed by prometheus_client's own parser: (name, labels) -> value."""
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


async def healthz(client: httpx.AsyncClient, port: int) -> httpx.Response | None:
    answer = await client.get(f"http://127.0.0.1:{port}/healthz")
    return answer if answer.status_code == 200 else None


async def test_metrics_have_every_series_after_a_run(fake: FakeTelegram, bert_dir: Path, tmp_path: Path) -> None:
    port = free_port()
    settings = bot_settings(fake, bert_dir, tmp_path, metrics_port=port, metrics_listen="127.0.0.1")
    async with running_bot(settings, fake), httpx.AsyncClient() as client:
        health = await eventually(lambda: healthz(client, port))
        assert health is not None and health.json() == {
            "status": "ok",
            "checks": {"updates": "ok", "database": "ok", "model": "ok"},
        }
        # What Docker's healthcheck runs: `mlm-bot health`, finding the port in the settings.
        env = {**os.environ, "METRICS_PORT": str(port), "WEBHOOK_URL": ""}
        done = await asyncio.to_thread(
            subprocess.run, [MLM_BOT, "health"], env=env, capture_output=True, text=True, timeout=60, check=False
        )
        assert done.returncode == 0 and done.stdout.startswith("healthy:"), done.stdout + done.stderr
        ann, bob = fake.user(601), fake.user(602)
        fake.too_many_requests = 1  # Telegram's flood control on the first send: retried, and counted
        await fake.send_text(ann, "The cat sat on the [MASK].")
        await fake.wait_for(lambda f: bool(f.sent("sendMessage", 601)))
        (answer,) = [m for m in fake._messages.values() if m["chat"]["id"] == 601 and m.get("from", {}).get("is_bot")]
        await fake.press(ann, answer, "more")
        await fake.wait_for(lambda f: bool(f.sent("editMessageText", 601)))
        await fake.inline(bob, "Paris is the [MASK] of France.")
        await fake.wait_for(lambda f: bool(f.sent("answerInlineQuery")))
        await fake.send_text(bob, "hello")  # no mask, no keyword: a hint
        await fake.wait_for(lambda f: bool(f.sent("sendMessage", 602)))
        await fake.settle()

        values = samples((await client.get(f"http://127.0.0.1:{port}/metrics")).text)

    def value(name: str, **labels: str) -> float:
        return values.get((name, tuple(sorted(labels.items()))), 0.0)

    assert value("mlm_bot_updates_total", type="message") == 2
    assert value("mlm_bot_updates_total", type="callback_query") == 1
    assert value("mlm_bot_updates_total", type="inline_query") == 1
    assert value("mlm_bot_replies_total", kind="prediction", outcome="ok") >= 2  # the DM and the "more" button
    assert value("mlm_bot_replies_total", kind="inline", outcome="ok") == 1
    assert value("mlm_bot_telegram_errors_total", method="sendMessage", code="429") == 1
    assert value("mlm_bot_handler_seconds_count", type="message") == 2
    assert value("mlm_bot_handler_seconds_count", type="inline_query") == 1
    assert value("mlm_bot_model_seconds_count", call="fill_mask") >= 3
    assert ("mlm_bot_writer_backlog", ()) in values and value("mlm_bot_writer_backlog") == 0
    assert ("mlm_bot_writer_dead_letters", ()) in values and value("mlm_bot_writer_dead_letters") == 0
    assert value("mlm_bot_up") == 1


async def test_healthz_says_what_is_wrong_when_the_model_worker_is_away(
    fake: FakeTelegram, bert_dir: Path, tmp_path: Path
) -> None:
    port = free_port()
    nobody = f"http://127.0.0.1:{free_port()}"
    settings = bot_settings(
        fake, bert_dir, tmp_path, metrics_port=port, metrics_listen="127.0.0.1", model_worker_url=nobody
    )
    async with running_bot(settings, fake), httpx.AsyncClient() as client:

        async def polling() -> dict | None:
            body = (await client.get(f"http://127.0.0.1:{port}/healthz")).json()
            return body if body["checks"]["updates"] == "ok" else None

        body = await eventually(polling)
        answer = await client.get(f"http://127.0.0.1:{port}/healthz")
    assert body is not None and answer.status_code == 503
    assert answer.json()["status"] == "unhealthy"
    assert answer.json()["checks"]["database"] == "ok"
    # What is wrong, never where: /healthz may be read by anyone who reaches the port.
    assert "cannot be reached" in answer.json()["checks"]["model"] and "127.0.0.1" not in answer.text
    env = {**os.environ, "METRICS_PORT": str(port), "WEBHOOK_URL": ""}  # the bot has stopped: nobody answers
    done = await asyncio.to_thread(
        subprocess.run, [MLM_BOT, "health"], env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 1 and done.stdout.startswith("unhealthy: no answer"), done.stdout


async def test_health_reports_an_unreachable_database_and_a_stalled_poll(bert_dir: Path, tmp_path: Path) -> None:
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        url = f"postgresql+asyncpg://bot:pw@127.0.0.1:{closed.getsockname()[1]}/bot"
    model = LocalFillMask(ModelSettings(model_name=str(bert_dir)))  # not started: still loading
    waiting = Health(Database(url), model, webhook=False)  # the start waits for Telegram: the model is not loading
    _, checks = await waiting.check()
    assert checks["updates"] == "starting: waiting for Telegram to answer getMe"
    assert checks["model"] == "not loaded yet: waiting for Telegram to answer getMe first"
    await waiting.database.close()
    health = Health(Database(url), model, webhook=False, started=True, model_started=True)
    health.last_poll = time.monotonic() - POLL_STALE_S - 5
    ok, checks = await health.check()
    assert not ok
    assert checks["database"].startswith("unreachable")
    assert checks["model"] == "the model is loading"
    assert checks["updates"].startswith("no answer from Telegram's getUpdates since")
    health.polled()
    assert health.updates() is None
    await health.database.close()


def test_webhook_problems_as_telegram_reports_them() -> None:
    url = "https://bot.example.com/telegram"
    now = datetime.now(timezone.utc)
    fine = WebhookInfo(url=url, has_custom_certificate=False, pending_update_count=0)
    old_error = WebhookInfo(
        url, False, 0, last_error_date=now - timedelta(hours=1), last_error_message="Connection refused"
    )
    failing = WebhookInfo(
        url, False, 12, last_error_date=now, last_error_message="Wrong response from the webhook: 502"
    )
    taken = WebhookInfo(url="", has_custom_certificate=False, pending_update_count=0)
    assert webhook_problem(fine, url) is None
    assert webhook_problem(old_error, url) is None
    assert webhook_problem(failing, url) == (
        "Telegram cannot deliver (Wrong response from the webhook: 502); 12 updates waiting"
    )
    assert "nowhere" in (webhook_problem(taken, url) or "")


async def test_a_metrics_port_in_use_is_one_clear_error(fake: FakeTelegram, bert_dir: Path, tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        settings = bot_settings(fake, bert_dir, tmp_path, metrics_port=port, metrics_listen="127.0.0.1")
        with pytest.raises(StartupError, match=f"cannot listen on 127.0.0.1:{port}.*METRICS_PORT"):
            async with running_bot(settings, fake):
                pass


async def test_json_logs_carry_the_update_fields_and_never_the_token(
    fake: FakeTelegram, bert_dir: Path, tmp_path: Path
) -> None:
    """A real ``mlm-bot run`` with LOG_FORMAT=json at DEBUG: every line is one JSON object; the line that ends an
    update names its update id, user id, chat type and outcome; the token is on no line."""
    # LOG_UPDATES=1: python-telegram-bot's own DEBUG lines (its calls, the updates) too, as asked for on purpose;
    # without it they stay out, with the people's words in them (tests/bot/test_forget.py checks that).
    env = bot_process_env(
        fake, bert_dir, tmp_path / "bot.sqlite3", LOG_FORMAT="json", LOG_LEVEL="DEBUG", LOG_UPDATES="1"
    )
    process = await start_bot_process(fake, env, tmp_path)
    try:
        update_id = await fake.push("message", fake.message(fake.private_chat(fake.user(603)), fake.user(603), "MLM"))
        await fake.wait_for(lambda f: lesson_started(f, 603), timeout=30)
        await fake.send_text(fake.user(604), "The cat sat on the [MASK].")
        await fake.wait_for(lambda f: bool(f.sent("sendMessage", 604)), timeout=30)
        process.terminate()
        output = (await asyncio.wait_for(process.communicate(), 60))[0].decode()
    finally:
        if process.returncode is None:
            process.kill()
    assert process.returncode == 0, output[-3000:]
    assert TOKEN not in output and TOKEN.split(":")[1] not in output
    lines = [line for line in output.splitlines() if line.strip()]
    records = [json.loads(line) for line in lines if line.startswith("{")]
    # Hugging Face's progress bars write to the terminal by themselves; every log line is JSON.
    assert len(records) >= 0.9 * len(lines) and {"time", "level", "logger", "message"} <= set(records[0])
    handled = [r for r in records if r.get("logger") == "bot.updates" and r.get("update_id") == update_id]
    assert handled, "no line for the update"
    set_pseudonym_key(TOKEN)  # as the bot does with its token
    assert handled[-1]["user"] == pseudonym(603) and handled[-1]["chat_type"] == "private"
    assert not any(r.get("user_id") for r in records), "log lines name people by a pseudonym, never their id"
    assert handled[-1]["update_type"] == "message" and handled[-1]["kind"] == "guide"
    assert handled[-1]["outcome"] == "ok" and handled[-1]["duration_ms"] > 0
    during = [r for r in records if r.get("user") == pseudonym(604) and r.get("logger") != "bot.updates"]
    assert during, "lines written while handling an update carry its fields"
    assert any("The cat sat on the [MASK]." in line for line in lines), "LOG_UPDATES=1 logs the updates whole"


def test_the_log_format_is_checked(tmp_path: Path) -> None:
    done = subprocess.run(
        [MLM_BOT, "--log-format", "xml", "db", "upgrade"], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 2 and "'xml' is not one of text, json" in done.stderr


@pytest.mark.parametrize("log_format", ["text", "json"])
def test_a_line_with_the_token_is_redacted(log_format: str) -> None:
    from bot.logs import formatter, redact

    redact(TOKEN)
    record = logging.LogRecord(
        "httpx", logging.WARNING, __file__, 1, "POST %s failed", (f"https://api.telegram.org/bot{TOKEN}/x",), None
    )
    line = formatter(log_format).format(record)
    assert TOKEN not in line and "bot<token>/x" in line


def test_log_format_and_level_come_from_dot_env_too(tmp_path: Path) -> None:
    """Like every other setting: ``.env`` in the working folder, unless the environment says otherwise."""
    (tmp_path / ".env").write_text("LOG_FORMAT=json\nLOG_LEVEL=INFO\nDATABASE_URL=sqlite+aiosqlite:///x.sqlite3\n")
    env = {k: v for k, v in os.environ.items() if k not in ("LOG_FORMAT", "LOG_LEVEL", "DATABASE_URL")}
    done = subprocess.run(
        [MLM_BOT, "db", "upgrade"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    lines = done.stderr.strip().splitlines()
    assert lines and all(json.loads(line)["level"] == "INFO" for line in lines)
