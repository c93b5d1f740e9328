"""Memory under a long mixed load: a real ``mlm-bot run`` process against the fake Bot API, 10,000 updates of
every kind people send (sentences with [MASK], words to tap and the taps, More and Chart under answers, inline
queries, /start, the guide, keyword comments in a group) and the odd ones a viral post brings (naughty strings,
texts of thousands of characters, edits, photos with captions, forged button data), half of them from people the
bot has never seen. Its resident memory (RSS, from /proc) is sampled after every 1,000 once the bot has gone quiet.
What matters is the growth after the first 2,000 (caches filling up and the allocator settling come first).

Then the plain path alone: ``--plain N`` new people each send one sentence with [MASK], and the RSS those N cost
is printed per person (after a warm-up of the same size, which pays for first-time allocations).

    python benchmarks/soak.py                 # 10,000 updates, a sample every 1,000, then 2,000 new people
    python benchmarks/soak.py --updates 3000 --every 500 --plain 0 --json-out soak.json

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
# A few of the "big list of naughty strings" kinds: markup, control and format characters, scripts, emoji.
NAUGHTY = [
    "<script>alert(1)</script> [MASK]", "&amp;&lt;b&gt; [mask] </b>", "\u0000\u202e[MASK]\u202d",
    "ZALGO T̸̢̧̛̛̛̛̛̛̛̛̛̛̛ [MASK]", "👨‍👩‍👧‍👦" * 40 + " [MASK]", "<mask> <MASK> [MASK] [mask]",
    "' OR 1=1; DROP TABLE users; -- [MASK]", "\u200b" * 300 + "MLM", "%s%s%s%n [MASK]", "{{7*7}} {% raw %} [MASK]",
    "ﷺ ﷽ 𒐫 [MASK]", "/start " + "x" * 64, "/predict", "```[MASK]```", "*_~[MASK]~_*",
]  # fmt: skip
ALPHABET = "abcdefghijklmnopqrstuvwxyz αβγ абв 日本語 🙂"


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


class People:
    """Who sends the next update: half the time someone new, otherwise one of the people seen so far."""

    def __init__(self, rng: random.Random, known: int = 2_000) -> None:
        self.rng = rng
        self.known = known
        self.next_new = 10_000_000

    def pick(self, fake, n: int, new_share: float) -> dict:
        if self.rng.random() < new_share:
            self.next_new += 1
            return fake.user(self.next_new, f"N{n}")
        return fake.user(100_000 + self.rng.randrange(self.known), f"P{n}")


def long_text(rng: random.Random) -> str:
    return "".join(rng.choice(ALPHABET) for _ in range(rng.randrange(1_000, 4_000))) + " [MASK]"


async def one_update(fake, rng: random.Random, people: People, n: int, post: dict, new_share: float) -> None:
    """One update, its kind drawn like a busy day's mix with a viral post's oddities."""
    user = people.pick(fake, n, new_share)
    uid = user["id"]
    draw = rng.random()
    answers = [m for m in list(fake._messages.values())[-400:] if m["chat"]["id"] == uid and m.get("reply_markup")]
    if draw < 0.25:
        await fake.send_text(user, rng.choice(SENTENCES) + f" #{n}")
    elif draw < 0.32:
        await fake.send_text(user, f"{rng.choice(WORDS)} {n}")
    elif draw < 0.42 and answers:
        message = rng.choice(answers)
        buttons = [b for row in message["reply_markup"]["inline_keyboard"] for b in row if b.get("callback_data")]
        if buttons:
            await fake.press(user, message, rng.choice(buttons)["callback_data"])
    elif draw < 0.55:
        await fake.inline(user, rng.choice(SENTENCES + NAUGHTY) + f" {n}")
    elif draw < 0.60:
        await fake.send_text(user, "/start")
    elif draw < 0.64:
        await fake.send_text(user, "MLM")
    elif draw < 0.72:
        await fake.send_text(user, rng.choice(NAUGHTY))
    elif draw < 0.77:
        await fake.send_text(user, long_text(rng))
    elif draw < 0.81:  # an edit of an earlier message: not a new request
        edited = fake.message(fake.private_chat(user), user, rng.choice(SENTENCES), edit_date=int(time.time()))
        await fake.push("edited_message", edited)
    elif draw < 0.85:  # a photo with a caption
        photo = [{"file_id": f"ph{n}", "file_unique_id": f"u{n}", "width": 90, "height": 90}]
        await fake.send_text(user, None, photo=photo, caption=rng.choice(["MLM", "[MASK] cat", "look"]))
    elif draw < 0.88:  # a button that was never sent: forged data on a bot message
        fake_message = fake.message(fake.private_chat(user), {"id": 1, "is_bot": True, "first_name": "B"}, "x")
        await fake.press(user, fake_message, rng.choice(["more", "tap:zzzz:3", "guide:p:99", "x" * 64]))
    else:
        message = fake.message(
            GROUP, user, f"MLM please {n}", reply_to_message=post, message_thread_id=post["message_id"]
        )
        await fake.push("message", message)


async def soak(updates: int, every: int, new_share: float, plain: int) -> tuple[list[dict], float | None]:
    from models.bench.random_models import build_bert
    from tests.support.bot_harness import free_port
    from tests.support.fake_telegram import TOKEN, FakeTelegram

    tmp = Path(tempfile.mkdtemp())
    model = build_bert(tmp / "bert")
    compared = build_bert(tmp / "compared", seed=1)  # not the bot's own model, which /compare would reuse
    fake = FakeTelegram()
    rng = random.Random(7)
    people = People(rng)
    samples: list[dict] = []
    per_person: float | None = None
    async with fake.running():
        env = dict(
            os.environ, TELEGRAM_BOT_TOKEN=TOKEN, TELEGRAM_API_BASE_URL=fake.url, MODEL_NAME=str(model),
            DATABASE_URL=f"sqlite+aiosqlite:///{tmp}/soak.sqlite3", MODEL_WORKER_URL="", LOG_LEVEL="WARNING",
            METRICS_PORT=str(free_port()), ACTIONS_PER_MINUTE="1000", PREDICTIONS_PER_MINUTE="1000",
            INLINE_QUERIES_PER_MINUTE="1000", COMPARE_MODELS=str(compared), PYTHONPATH=str(ROOT),
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
            await warm_up(fake)
            samples.append({"updates": 0, "rss_mib": rss_mib(process.pid), "seconds": 0.0})
            started = time.perf_counter()
            for n in range(1, updates + 1):
                await one_update(fake, rng, people, n, post, new_share)
                if n % 50 == 0:
                    await asyncio.sleep(0.5)  # a busy day, not one burst
                if n % every == 0:
                    await fake.settle(2.0)
                    fake.calls.clear()  # the fake's own record of calls is not the bot's memory
                    sample = {"updates": n, "rss_mib": rss_mib(process.pid), "seconds": time.perf_counter() - started}
                    samples.append(sample)
                    print(f"{n:6d} updates  RSS {sample['rss_mib']:7.1f} MiB  ({sample['seconds']:.0f} s)", flush=True)
            if plain:
                await plain_sentences(fake, 30_000_000, plain)  # warm-up: first-time allocations
                before = rss_mib(process.pid)
                await plain_sentences(fake, 40_000_000, plain)
                per_person = (rss_mib(process.pid) - before) * 1024 / plain
                print(f"plain path: {plain} new people, {per_person:.2f} KiB of RSS each", flush=True)
        finally:
            process.send_signal(signal.SIGTERM)
            await asyncio.wait_for(process.wait(), 60)
    return samples, per_person


async def warm_up(fake) -> None:
    """What loads once and stays, before the first sample: /compare's models (the first Compare press loads them,
    tens of MiB) and the chart's drawing library. Growth after it is what the updates themselves cost."""
    user = fake.user(99_999, "Warm")
    await fake.send_text(user, SENTENCES[0])
    await fake.wait_for(lambda f: bool(f.sent("sendMessage", 99_999)), timeout=120)
    answer = [m for m in fake._messages.values() if m["chat"]["id"] == 99_999 and m.get("reply_markup")][-1]
    await fake.press(user, answer, "chart")
    await fake.wait_for(lambda f: bool(f.sent("sendPhoto", 99_999)), timeout=120)
    await fake.press(user, answer, "compare")  # "loading the models", then the comparison
    await fake.wait_for(lambda f: len(f.sent("sendMessage", 99_999)) >= 3, timeout=300)
    await fake.settle(3.0)


async def plain_sentences(fake, first_id: int, count: int) -> None:
    """``count`` people the bot has never seen each send one sentence with [MASK]; waits until all are answered."""
    before = len(fake.sent("sendMessage"))
    for n in range(count):
        await fake.send_text(fake.user(first_id + n, f"Q{n}"), plain_sentence(n))
        if n % 100 == 99:
            await asyncio.sleep(1.0)
    await fake.wait_for(lambda f: len(f.sent("sendMessage")) - before >= count, timeout=900)
    await fake.settle(2.0)
    fake.calls.clear()


def plain_sentence(n: int) -> str:
    return SENTENCES[n % len(SENTENCES)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--updates", type=int, default=10_000)
    parser.add_argument("--every", type=int, default=1_000)
    parser.add_argument("--new-share", type=float, default=0.5, help="share of updates from people never seen")
    parser.add_argument("--plain", type=int, default=2_000, help="new people on the plain path (0: skip)")
    parser.add_argument("--json-out")
    args = parser.parse_args()
    samples, per_person = asyncio.run(soak(args.updates, args.every, args.new_share, args.plain))
    settled = [s for s in samples if s["updates"] >= min(2_000, args.updates // 5)]
    if len(settled) >= 2:
        growth = settled[-1]["rss_mib"] - settled[0]["rss_mib"]
        span = settled[-1]["updates"] - settled[0]["updates"]
        print(f"growth after {settled[0]['updates']} updates: {growth:+.1f} MiB over the next {span}")
    if args.json_out:
        Path(args.json_out).write_text(json.dumps({"samples": samples, "plain_kib_per_person": per_person}, indent=1))


if __name__ == "__main__":
    main()
