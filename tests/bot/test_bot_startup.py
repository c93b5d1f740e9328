"""``mlm-bot run`` at start-up, against the fake Bot API: the token is checked before the model loads, and a
Telegram that cannot be reached yet is waited for (one log line per try) instead of ending the bot."""

from __future__ import annotations

import asyncio
import logging
import socket
from pathlib import Path

import pytest

from bot.runner import TokenRefused, serve
from models.serving.client import LocalFillMask
from tests.support.bot_harness import bot_settings
from tests.support.fake_telegram import FakeTelegram


async def test_a_refused_token_stops_before_the_model_loads(
    bert_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    fake = FakeTelegram()
    async with fake.running():
        settings = bot_settings(
            fake, bert_dir, tmp_path, telegram_bot_token="123456789:WRONG-token_abcdefghijklmnopqrstuv"
        )
        model = LocalFillMask(settings)
        with pytest.raises(TokenRefused, match="@BotFather"):
            await asyncio.wait_for(serve(settings, asyncio.Event(), model=model), 30)
        assert model.engine is None, "the model must not be loaded for a token Telegram refuses"
    # The start-up log says where the interaction log is (an absolute path) and which .env was read.
    assert f"SQLite file {(tmp_path / 'bot.sqlite3').resolve()}" in caplog.text
    assert str(Path.cwd() / ".env") in caplog.text


async def test_an_unreachable_telegram_is_retried_until_it_answers(
    bert_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    fake = FakeTelegram()
    fake.url = f"http://127.0.0.1:{port}/bot"  # nothing listens there yet
    settings = bot_settings(fake, bert_dir, tmp_path)
    stop = asyncio.Event()
    task = asyncio.create_task(serve(settings, stop))
    try:
        for _ in range(100):
            if caplog.text.count("Telegram is unreachable") >= 2:
                break
            await asyncio.sleep(0.1)
        assert caplog.text.count("Telegram is unreachable") >= 2, "one line per try, and it keeps trying"
        assert not task.done(), "an unreachable Telegram must not end the bot"
        lines = [r for r in caplog.records if "Telegram is unreachable" in r.getMessage()]
        assert all("\n" not in r.getMessage() and r.exc_info is None for r in lines), "one line, no traceback"
        async with fake.running(port=port):
            await fake.wait_for(lambda f: bool(f.sent("deleteWebhook")), timeout=30)  # polling started
            stop.set()
            await asyncio.wait_for(task, 30)
    finally:
        stop.set()
        if not task.done():
            task.cancel()


async def test_stopping_while_telegram_is_unreachable_ends_cleanly(bert_dir: Path, tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    fake = FakeTelegram()
    fake.url = f"http://127.0.0.1:{port}/bot"
    settings = bot_settings(fake, bert_dir, tmp_path)
    stop = asyncio.Event()
    model = LocalFillMask(settings)
    task = asyncio.create_task(serve(settings, stop, model=model))
    await asyncio.sleep(1.5)
    stop.set()
    await asyncio.wait_for(task, 10)
    assert model.engine is None
