"""A viral post's Mini App against the real bot on this CPU: does the chat keep its pace?

A real ``mlm-bot run`` process (fake Bot API, MINI_APP_URL set, the model in-process) gets two phases of the same
length: ``--chatters`` people chatting alone (each sends a sentence with [MASK], waits for the answer, reads for
1-3 s, sends the next), then the same chat while ``--mini-app-users`` people type in the Mini App (signed
initData; like the page: a request after each pause in typing, one in flight, a 429's Retry-After obeyed).

Printed: the chat's answer time (p50, p95) in each phase and their ratio; the Mini App's answers, its 429s and
whether each carried Retry-After; the bot's RSS at the start and end of the loaded phase; whether the bot is still
up. The Mini App's load comes from a process of its own (the fake Bot API and the chat's clock are in this one),
on the same cores as the bot.

    python benchmarks/viral_mini_app.py                          # tiny model, 300 + 50 people, 30 s a phase
    python benchmarks/viral_mini_app.py --shape bert-base --seconds 60 --json-out viral.json

Needs the test extra (the fake Bot API lives in ``tests/``; aiohttp is the Mini App's load generator).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.soak import rss_mib  # noqa: E402

SENTENCES = [
    "The cat sat on the [MASK].", "Paris is the [MASK] of France.", "I went to the [MASK] to buy bread.",
    "She plays the [MASK] every evening.", "The [MASK] barked at the mailman.", "We need more [MASK] in the soup.",
]  # fmt: skip
TYPING = [
    "The", "The dog", "The dog ran", "The dog ran to the", "The dog ran to the [MASK]", "The dog ran to the [MASK].",
]  # fmt: skip


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


class Replies:
    """Watches the fake's calls once for everyone: who got a message, and when (scanning the whole list per
    person would cost more than the bot under test)."""

    def __init__(self, fake) -> None:
        self.fake = fake
        self.events: dict[int, asyncio.Event] = {}

    def expect(self, chat_id: int) -> asyncio.Event:
        event = self.events[chat_id] = asyncio.Event()
        return event

    async def run(self) -> None:
        while True:
            await self.fake.wait_for(lambda f: bool(f.calls), timeout=3600)
            calls = list(self.fake.calls)
            del self.fake.calls[: len(calls)]
            for call in calls:
                if call.method == "sendMessage":
                    event = self.events.get(int(call.params.get("chat_id", 0)))
                    if event is not None:
                        event.set()


async def chatter(fake, replies: Replies, user_id: int, until: float, latencies: list[float]) -> None:
    rng = random.Random(user_id)
    user = fake.user(user_id, f"C{user_id}")
    await asyncio.sleep(rng.uniform(0, 2))
    while time.monotonic() < until:
        event = replies.expect(user_id)
        started = time.monotonic()
        await fake.send_text(user, rng.choice(SENTENCES))
        try:
            await asyncio.wait_for(event.wait(), 60)
            latencies.append(time.monotonic() - started)
        except asyncio.TimeoutError:
            latencies.append(60.0)
        await asyncio.sleep(rng.uniform(1, 3))


async def mini_app_user(session, url: str, token: str, user_id: int, until: float, stats: dict) -> None:
    from tests.support.mini_app import signed_init_data

    rng = random.Random(-user_id)
    headers = {"Authorization": f"tma {signed_init_data(token, user_id)}", "Content-Type": "application/json"}
    await asyncio.sleep(rng.uniform(0, 3))
    step = 0
    while time.monotonic() < until:
        text = TYPING[step % len(TYPING)]
        step += 1
        await asyncio.sleep(0.3 + rng.uniform(0, 0.2))  # the page's debounce after a pause in typing
        if "[MASK]" not in text:
            continue  # the page asks nothing without a mask
        try:
            async with session.post(f"{url}/app/api/fill-mask", data=json.dumps({"text": text}), headers=headers) as r:
                await r.read()
                stats[r.status] = stats.get(r.status, 0) + 1
                if r.status in (429, 503):
                    wait = r.headers.get("Retry-After")
                    stats["with_retry_after" if wait else "without_retry_after"] += 1
                    await asyncio.sleep(min(float(wait or 1), 60))
        except Exception as exc:
            stats[type(exc).__name__] = stats.get(type(exc).__name__, 0) + 1


async def run(args: argparse.Namespace) -> dict:

    from models.bench.random_models import BUILDERS
    from tests.support.bot_harness import free_port
    from tests.support.fake_telegram import TOKEN, FakeTelegram

    tmp = Path(tempfile.mkdtemp())
    model = BUILDERS[args.shape](tmp / "model")
    fake = FakeTelegram()
    port = free_port()
    report: dict = {"shape": args.shape, "chatters": args.chatters, "mini_app_users": args.mini_app_users}
    async with fake.running():
        env = dict(
            os.environ, TELEGRAM_BOT_TOKEN=TOKEN, TELEGRAM_API_BASE_URL=fake.url, MODEL_NAME=str(model),
            MODEL_DTYPE=args.dtype, DATABASE_URL=f"sqlite+aiosqlite:///{tmp}/viral.sqlite3", MODEL_WORKER_URL="",
            LOG_LEVEL="WARNING", METRICS_PORT=str(port), MINI_APP_URL="https://bot.example.com/app",
            PYTHONPATH=str(args.bot_root),
        )  # fmt: skip
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bot.cli", "run", env=env, cwd=tmp,
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
        )  # fmt: skip
        replies = Replies(fake)
        watcher = asyncio.create_task(replies.run())
        bot_cpus, load_cpus = split_cpus(args.bot_cpus)
        if bot_cpus:  # the bot's threads (its model's too: torch sizes its pool at the first forward) on their own
            os.sched_setaffinity(process.pid, bot_cpus)
            os.sched_setaffinity(0, load_cpus)
        report["bot_cpus"], report["load_cpus"] = sorted(bot_cpus), sorted(load_cpus)
        try:
            await fake.wait_for(lambda f: bool(f.sent("deleteWebhook")), timeout=300)
            warm: list[float] = []
            await chatter(fake, replies, 1, time.monotonic() + 3, warm)
            for phase in ("chat alone", "chat + Mini App"):
                until = time.monotonic() + args.seconds
                latencies: list[float] = []
                stats = {"with_retry_after": 0, "without_retry_after": 0}
                rss_before = rss_mib(process.pid)
                jobs = [chatter(fake, replies, 1000 + i, until, latencies) for i in range(args.chatters)]
                load = None
                if phase != "chat alone":  # in a process of its own: this one's event loop is the Bot API's
                    load = await asyncio.create_subprocess_exec(
                        sys.executable, __file__, "--load-only", f"http://127.0.0.1:{port}",
                        "--mini-app-users", str(args.mini_app_users), "--seconds", str(args.seconds),
                        stdout=asyncio.subprocess.PIPE,
                    )  # fmt: skip
                await asyncio.gather(*jobs)
                if load is not None:
                    out, _ = await load.communicate()
                    stats = json.loads(out.decode().strip().splitlines()[-1])
                report[phase] = {
                    "chat_answers": len(latencies),
                    "chat_p50_s": percentile(latencies, 0.5),
                    "chat_p95_s": percentile(latencies, 0.95),
                    "chat_mean_s": statistics.fmean(latencies) if latencies else None,
                    "mini_app": {str(k): v for k, v in stats.items()} if phase != "chat alone" else None,
                    "rss_mib_start": round(rss_before, 1),
                    "rss_mib_end": round(rss_mib(process.pid), 1),
                }
                print(phase, json.dumps(report[phase]), flush=True)
                await asyncio.sleep(2)
            report["bot_still_up"] = process.returncode is None
        finally:
            watcher.cancel()
            process.send_signal(signal.SIGTERM)
            await asyncio.wait_for(process.wait(), 60)
    alone, loaded = report["chat alone"], report["chat + Mini App"]
    if alone["chat_p95_s"] and loaded["chat_p95_s"]:
        report["chat_p95_ratio"] = loaded["chat_p95_s"] / alone["chat_p95_s"]
    return report


def split_cpus(count: int) -> tuple[set[int], set[int]]:
    """``count`` of this machine's CPUs for the bot, the rest for the fake Bot API and the Mini App's users (a
    real bot's Telegram and users are elsewhere); 0: no pinning, everything shares every CPU."""
    cpus = sorted(os.sched_getaffinity(0))
    if count <= 0 or count >= len(cpus):
        return set(), set(cpus)
    return set(cpus[:count]), set(cpus[count:])


async def load_only(url: str, users: int, seconds: float) -> dict:
    """The Mini App's users alone (the loaded phase's second process); their outcomes by status."""
    import aiohttp

    from tests.support.fake_telegram import TOKEN

    until = time.monotonic() + seconds
    stats: dict = {"with_retry_after": 0, "without_retry_after": 0}
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=60)) as session:
        await asyncio.gather(*(mini_app_user(session, url, TOKEN, 50_000 + i, until, stats) for i in range(users)))
    return {str(k): v for k, v in stats.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--load-only", metavar="URL", help=argparse.SUPPRESS)
    parser.add_argument("--shape", default="bert", choices=["bert", "bert-base"], help="random model (bert: tiny)")
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--chatters", type=int, default=50)
    parser.add_argument("--mini-app-users", type=int, default=300)
    parser.add_argument("--seconds", type=float, default=30.0, help="length of each phase")
    parser.add_argument(
        "--bot-cpus", type=int, default=1, help="CPUs pinned to the bot, the rest to the load (0: no pinning)"
    )
    parser.add_argument(
        "--bot-root", type=Path, default=ROOT, help="the bot's code from another checkout (git worktree): a before"
    )
    parser.add_argument("--json-out")
    args = parser.parse_args()
    if args.load_only:
        print(json.dumps(asyncio.run(load_only(args.load_only, args.mini_app_users, args.seconds))))
        return
    report = asyncio.run(run(args))
    alone, loaded = report["chat alone"], report["chat + Mini App"]
    print(
        f"chat p95: {alone['chat_p95_s']:.3f} s alone, {loaded['chat_p95_s']:.3f} s with {args.mini_app_users} "
        f"Mini App users ({report.get('chat_p95_ratio', float('nan')):.2f}x); Mini App: {loaded['mini_app']}; "
        f"RSS {loaded['rss_mib_start']} -> {loaded['rss_mib_end']} MiB; bot up: {report['bot_still_up']}"
    )
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
