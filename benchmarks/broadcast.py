"""A broadcast's rate, and what it costs someone talking to the bot meanwhile: the real bot (``bot.runner.serve``)
against the fake Bot API, N subscribers, ``BROADCAST_PER_SECOND`` as set. Measures in one run:

* baseline: a person's reply latency (their sentence with [MASK] in, the answer out) with the bot idle;
* the same person, the same sentences, while the broadcast runs; and the broadcast's rate (messages a second).

Prints both latencies (median and p95) and their ratio. Needs the test extra (the fake Bot API lives in ``tests/``).

    python benchmarks/broadcast.py --subscribers 2000 --replies 30
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


async def latencies(fake, first_id: int, count: int) -> list[float]:
    """Seconds from a sentence pushed to its answer sent, one person after another (each a new one, so the
    private chat's own pace, one message a second after a burst, is not what is measured)."""
    took = []
    for user_id in range(first_id, first_id + count):
        started = time.perf_counter()
        await fake.send_text(fake.user(user_id), "The cat sat on the [MASK].")
        await fake.wait_for(lambda f, u=user_id: bool(f.sent("sendMessage", u)), timeout=60)
        took.append(time.perf_counter() - started)
        await asyncio.sleep(0.2)
    return took


def summary(values: list[float]) -> str:
    ordered = sorted(values)
    return (
        f"median {statistics.median(ordered) * 1000:.0f} ms, p95 {ordered[int(len(ordered) * 0.95) - 1] * 1000:.0f} ms"
    )


async def main(args: argparse.Namespace) -> None:
    from bot.storage import Database, Repository
    from bot.storage.writes import SubscriptionChanged, UserInfo, UserStarted, write_all
    from models.bench.random_models import BUILDERS
    from tests.support.bot_harness import bot_settings, running_bot
    from tests.support.fake_telegram import FakeTelegram

    folder = Path(tempfile.mkdtemp())
    model = BUILDERS["bert"](folder / "model")
    fake = FakeTelegram()
    async with fake.running():
        settings = bot_settings(fake, model, folder, broadcast_per_second=args.per_second, predictions_per_minute=1000)
        database = Database(settings.database_url)
        await database.migrate()
        now = datetime.now(timezone.utc)
        people = [UserInfo(100_000 + i) for i in range(args.subscribers)]
        await write_all(
            database, [UserStarted(p, now) for p in people] + [SubscriptionChanged(p, True, now) for p in people]
        )
        async with running_bot(settings, fake):
            await latencies(fake, 7_000, 3)  # warm-up: the model's first calls
            idle = await latencies(fake, 8_000, args.replies)
            repo = Repository(database)
            broadcast_id, queued = await repo.broadcasts.create("A new guide is out: comment BERT!", None)
            started = time.perf_counter()
            during = await latencies(fake, 9_000, args.replies)
            while (progress := await repo.broadcasts.progress(broadcast_id)).state == "sending":  # noqa: ASYNC110
                await asyncio.sleep(0.2)
            seconds = time.perf_counter() - started
        await database.close()
    sent = progress.counts.get("sent", 0)
    print(f"broadcast: {sent} of {queued} sent in {seconds:.1f} s = {sent / seconds:.1f} messages/s "
          f"(BROADCAST_PER_SECOND={args.per_second})")  # fmt: skip
    print(f"reply latency, bot idle:          {summary(idle)}")
    print(f"reply latency, during broadcast:  {summary(during)}")
    print(f"ratio (during / idle, medians):   {statistics.median(during) / statistics.median(idle):.2f}x")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subscribers", type=int, default=1000)
    parser.add_argument("--replies", type=int, default=20)
    parser.add_argument("--per-second", type=float, default=20)
    asyncio.run(main(parser.parse_args()))
