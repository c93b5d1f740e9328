"""Runs the real bot (``bot.runner.serve``, the code behind ``mlm-bot run``) against the fake Bot API."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from bot.runner import serve
from bot.settings import BotSettings
from bot.storage import Database, Repository
from models.client import FillMaskService
from tests.fake_telegram import TOKEN, FakeTelegram


def bot_settings(fake: FakeTelegram, model_dir: Path, tmp_path: Path, **overrides: Any) -> BotSettings:
    values: dict[str, Any] = {
        "telegram_bot_token": TOKEN,
        "telegram_api_base_url": fake.url,
        "database_url": f"sqlite+aiosqlite:///{tmp_path}/bot.sqlite3",
        "model_name": str(model_dir),
        "model_worker_url": None,
        "trigger_keywords": "MLM",
    }
    values.update(overrides)
    return BotSettings(_env_file=None, **values)  # type: ignore[call-arg]


@contextlib.asynccontextmanager
async def running_bot(
    settings: BotSettings, fake: FakeTelegram, model: FillMaskService | None = None
) -> AsyncIterator[Repository]:
    stop = asyncio.Event()
    task = asyncio.create_task(serve(settings, stop, model=model))
    ready = asyncio.create_task(fake.wait_for(lambda f: bool(f.sent("deleteWebhook")), timeout=60))
    done, _ = await asyncio.wait({task, ready}, return_when=asyncio.FIRST_COMPLETED)
    if task in done:
        ready.cancel()
        task.result()  # raises what went wrong at start-up
    database = Database(settings.database_url)
    try:
        yield Repository(database)
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)
        await database.close()


async def eventually(check: Any, timeout: float = 10.0) -> Any:
    """Poll an async ``check`` until it returns something truthy: the bot's bookkeeping is written in the
    background, a moment after the reply."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        result = await check()
        if result or asyncio.get_running_loop().time() > deadline:
            return result
        await asyncio.sleep(0.05)
