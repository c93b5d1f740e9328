"""Shared test helpers (processes)."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

from tests.support.fake_telegram import TOKEN, FakeTelegram

MLM_BOT = str(Path(sys.executable).with_name("mlm-bot"))


def bot_process_env(fake: FakeTelegram, bert_dir: Path, database: Path, **extra: str) -> dict[str, str]:
    """The environment of a real ``mlm-bot run`` process against the fake Bot API."""
    return dict(
        os.environ,
        TELEGRAM_BOT_TOKEN=TOKEN,
        TELEGRAM_API_BASE_URL=fake.url,
        MODEL_NAME=str(bert_dir),
        DATABASE_URL=f"sqlite+aiosqlite:///{database}",
        MODEL_WORKER_URL="",
        PREDICTIONS_PER_MINUTE="100",
        METRICS_PORT="0",
        **extra,
    )


async def start_bot_process(fake: FakeTelegram, env: dict[str, str], cwd: Path) -> asyncio.subprocess.Process:
    """A real ``mlm-bot run``, returned once it polls the fake Bot API."""
    calls = len(fake.sent("deleteWebhook"))
    process = await asyncio.create_subprocess_exec(
        MLM_BOT, "run", env=env, cwd=cwd, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    await fake.wait_for(lambda f: len(f.sent("deleteWebhook")) > calls, timeout=60)
    return process
