"""Memory under a long mixed load: a real ``mlm-bot run`` process against the fake Bot API, 10,000 updates of
every kind people send (sentences with [MASK], words to tap and the taps, More and Chart under answers, inline
queries, /start, the guide, keyword comments in a group), its resident memory (RSS, from /proc) sampled after
every 1,000 once the bot has gone quiet. What matters is the growth after the first 2,000 (caches filling up and
the allocator settling come first).

    python benchmarks/soak.py                 # 10,000 updates, a sample every 1,000
    python benchmarks/soak.py --updates 3000 --every 500 --json-out soak.json

Needs the test extra (the fake Bot API lives in ``tests/``). Takes several minutes: the bot paces its messages
as Telegram asks (30 a second overall).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

GROUP = {"id": -1001555000777, "type": "supergroup", "title": "Soak discussion"}
CHANNEL = {"id": -1001555000888, "type": "channel", "title": "Soak channel"}
SENTENCES = [
    "The cat sat on the [MASK].", "Paris is the [MASK] of France.", "I went to the [MASK] to buy bread.",
    "She plays the [MASK] every evening.", "The [MASK] barked at the mailman.", "We need more [MASK] in the soup.",
]  # fmt: skip
WORDS = ["the quick brown fox jumps over the lazy dog", "models learn words from context", "bread and butter"]


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


async def one_update(fake, rng: random.Random, n: int, post: dict) -> None:
    """One update, its kind drawn like a busy day's mix."""
    user = fake.user(100_000 + rng.randrange(2_000), f"P{n}")
    uid = user["id"]
    draw = rng.random()
    answers = [m for m in list(fake._messages.values())[-400:] if m["chat"]["id"] == uid and m.get("reply_markup")]
    if draw < 0.35:
        await fake.send_text(user, rng.choice(SENTENCES) + f" #{n}")
    elif draw < 0.45:
        await fake.send_text(user, f"{rng.choice(WORDS)} {n}")
    elif draw < 0.60 and answers:
        message = rng.choice(answers)
        buttons = [b for row in message["reply_markup"]["inline_keyboard"] for b in row if b.get("callback_data")]
        if buttons:
            await fake.press(user, message, rng.choice(buttons)["callback_data"])
    elif draw < 0.80:
        await fake.inline(user, rng.choice(SENTENCES) + f" {n}")
    elif draw < 0.88:
        await fake.send_text(user, "/start")
    elif draw < 0.93:
        await fake.send_text(user, "MLM")
    else:
        message = fake.message(
            GROUP, user, f"MLM please {n}", reply_to_message=post, message_thread_id=post["message_id"]
        )
        await fake.push("message", message)


async def soak(updates: int, every: int) -> list[dict]:
    from models.bench.random_models import build_bert
    from tests.support.bot_harness import free_port
    from tests.support.fake_telegram import TOKEN, FakeTelegram

    tmp = Path(tempfile.mkdtemp())
    model = build_bert(tmp / "bert")
    fake = FakeTelegram()
    rng = random.Random(7)
    samples: list[dict] = []
    async with fake.running():
        env = dict(
            os.environ, TELEGRAM_BOT_TOKEN=TOKEN, TELEGRAM_API_BASE_URL=fake.url, MODEL_NAME=str(model),
            DATABASE_URL=f"sqlite+aiosqlite:///{tmp}/soak.sqlite3", MODEL_WORKER_URL="", LOG_LEVEL="WARNING",
            METRICS_PORT=str(free_port()), ACTIONS_PER_MINUTE="1000", PREDICTIONS_PER_MINUTE="1000",
            INLINE_QUERIES_PER_MINUTE="1000", COMPARE_MODELS=str(model),
        )  # fmt: skip
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bot.cli", "run", env=env, cwd=tmp,
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
        )  # fmt: skip
        try:
            await fake.wait_for(lambda f: bool(f.sent("deleteWebhook")), timeout=120)
            post = fake.message(
                GROUP, fake.user(777000, "Telegram"), "New video: comment MLM", is_automatic_forward=True,
                sender_chat=CHANNEL, forward_origin={"type": "channel", "date": 0, "chat": CHANNEL, "message_id": 1},
            )  # fmt: skip
            await fake.push("message", post)
            samples.append({"updates": 0, "rss_mib": rss_mib(process.pid), "seconds": 0.0})
            started = time.perf_counter()
            for n in range(1, updates + 1):
                await one_update(fake, rng, n, post)
                if n % 50 == 0:
                    await asyncio.sleep(0.5)  # a busy day, not one burst
                if n % every == 0:
                    await fake.settle(2.0)
                    fake.calls.clear()  # the fake's own record of calls is not the bot's memory
                    sample = {"updates": n, "rss_mib": rss_mib(process.pid), "seconds": time.perf_counter() - started}
                    samples.append(sample)
                    print(f"{n:6d} updates  RSS {sample['rss_mib']:7.1f} MiB  ({sample['seconds']:.0f} s)", flush=True)
        finally:
            process.send_signal(signal.SIGTERM)
            await asyncio.wait_for(process.wait(), 60)
    return samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--updates", type=int, default=10_000)
    parser.add_argument("--every", type=int, default=1_000)
    parser.add_argument("--json-out")
    args = parser.parse_args()
    samples = asyncio.run(soak(args.updates, args.every))
    settled = [s for s in samples if s["updates"] >= min(2_000, args.updates // 5)]
    if len(settled) >= 2:
        growth = settled[-1]["rss_mib"] - settled[0]["rss_mib"]
        span = settled[-1]["updates"] - settled[0]["updates"]
        print(f"growth after {settled[0]['updates']} updates: {growth:+.1f} MiB over the next {span}")
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(samples, indent=1))


if __name__ == "__main__":
    main()
