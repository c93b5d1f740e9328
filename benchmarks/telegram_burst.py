"""A burst of private messages with a [MASK] sentence against the fake Bot API: seconds until all are answered.

Measures the whole reply path of the real bot (``bot.runner.serve``: polling, the inbox, handlers, the tiny
model, Telegram's 30 messages/s limiter, the log writer), in polling mode and in webhook mode (the fake POSTs
updates over 40 connections, Telegram's default), one after the other in the same run. To compare two versions
of the code, run it from each checkout with the same venv::

    PYTHONPATH=/path/to/old/checkout python benchmarks/telegram_burst.py 200
    PYTHONPATH=. python benchmarks/telegram_burst.py 200

Needs the test extra (the fake Bot API lives in ``tests/``).
"""

from __future__ import annotations

import asyncio
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


async def burst(count: int, *, webhook: bool) -> float:
    from models.bench.random_models import build_bert
    from tests.support.bot_harness import bot_settings, free_port, running_bot
    from tests.support.fake_telegram import FakeTelegram

    tmp = Path(tempfile.mkdtemp())
    model = build_bert(tmp / "bert")
    fake = FakeTelegram()
    fake.webhook_connections = 40
    async with fake.running():
        extra = {}
        if webhook:
            port = free_port()
            extra = {
                "webhook_url": f"http://127.0.0.1:{port}/hook",
                "webhook_port": port,
                "webhook_listen": "127.0.0.1",
            }
        settings = bot_settings(fake, model, tmp, predictions_per_minute=100_000, **extra)
        async with running_bot(settings, fake):
            users = [fake.user(10_000 + i) for i in range(count)]
            started = time.perf_counter()
            for i, user in enumerate(users):
                await fake.send_text(user, f"Person {i} says the cat sat on the [MASK].")
            await fake.wait_for(lambda f: all(f.sent("sendMessage", u["id"]) for u in users), timeout=600)
            return time.perf_counter() - started


async def main(count: int) -> None:
    for webhook in (False, True):
        seconds = await burst(count, webhook=webhook)
        mode = "webhook" if webhook else "polling"
        print(f"{mode:8} {count} private messages answered in {seconds:.2f} s ({count / seconds:.1f}/s)")


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 200))
