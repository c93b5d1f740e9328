"""Runs the real bot (``bot.runner.serve``, the code behind ``mlm-bot run``) against the fake Bot API."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from telegram.ext import Application

from bot.config import BotSettings
from bot.runner import serve
from bot.storage import Database, Repository
from models.serving.client import FillMaskService
from tests.support.fake_telegram import TOKEN, FakeTelegram


def bot_settings(fake: FakeTelegram, model_dir: Path, tmp_path: Path, **overrides: Any) -> BotSettings:
    values: dict[str, Any] = {
        "telegram_bot_token": TOKEN,
        "telegram_api_base_url": fake.url,
        "database_url": f"sqlite+aiosqlite:///{tmp_path}/bot.sqlite3",
        "model_name": str(model_dir),
        "model_worker_url": None,
        "trigger_keywords": "MLM",  # as an older .env has it: still the MLM guide's keywords
        "metrics_port": 0,  # no HTTP server unless a test asks for one (tests run side by side)
    }
    values.update(overrides)
    return BotSettings(_env_file=None, **values)  # type: ignore[call-arg]


@contextlib.asynccontextmanager
async def running_bot(
    settings: BotSettings, fake: FakeTelegram, model: FillMaskService | None = None
) -> AsyncIterator[Repository]:
    stop = asyncio.Event()
    task = asyncio.create_task(serve(settings, stop, model=model))
    # Up once it polls (PTB deletes any webhook first) or has set its webhook.
    up = lambda f: bool(f.sent("deleteWebhook") or f.sent("setWebhook"))  # noqa: E731
    ready = asyncio.create_task(fake.wait_for(up, timeout=60))
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


def built_application(settings: BotSettings) -> tuple[Application, Repository]:
    """The application ``mlm-bot run`` would build, with its services, not started (Telegram is not contacted)."""
    from bot.app import build_application
    from bot.budgets import ModelCallLimit
    from bot.public_replies import CommentReplies
    from bot.services import BotServices
    from bot.storage.writer import InteractionWriter
    from bot.text.render import Renderer
    from models.serving.client import LocalFillMask

    repo = Repository(Database(settings.database_url))
    writer = InteractionWriter(repo.interactions.log_many)
    services = BotServices(settings, LocalFillMask(settings), repo, writer, Renderer(), ModelCallLimit(5),
                           ModelCallLimit(5, one_at_a_time=False), CommentReplies(Renderer(), writer.log))  # fmt: skip
    return build_application(settings, services), repo


def free_port() -> int:
    """A TCP port nobody listens on right now, on 127.0.0.1."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


async def eventually(check: Any, timeout: float = 10.0) -> Any:
    """Poll an async ``check`` until it returns something truthy: the bot's bookkeeping is written in the
    background, a moment after the reply."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        result = await check()
        if result or asyncio.get_running_loop().time() > deadline:
            return result
        await asyncio.sleep(0.05)
