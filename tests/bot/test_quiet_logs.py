"""An idle bot writes nothing to its log at the default level: the scheduler's 1-second jobs used to log two INFO
lines a second (about 170,000 a day) through apscheduler's own logger."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest

from tests.support.bot_harness import bot_settings, running_bot
from tests.support.fake_telegram import FakeTelegram

IDLE_S = 5.0


async def test_an_idle_bot_logs_nothing_at_info(
    bert_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    fake = FakeTelegram()
    async with fake.running():
        async with running_bot(bot_settings(fake, bert_dir, tmp_path), fake):
            await fake.settle(1.0)  # started: its own start-up lines are out
            with caplog.at_level(logging.INFO):
                caplog.clear()
                await asyncio.sleep(IDLE_S)  # several runs of every 1-second job
                lines = [f"{r.name}: {r.getMessage()}" for r in caplog.records if r.levelno >= logging.INFO]
    assert lines == [], f"{len(lines)} lines in {IDLE_S:.0f} idle seconds: {lines[:4]}"
