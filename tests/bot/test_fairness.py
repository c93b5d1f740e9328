"""One person cannot slow the others down: the abuse run of issue 19, against a fake Bot API that refuses a chat
with 429 the way Telegram's flood control does (a short burst, then about one message a second per private
chat), with the real bot, its real pacing and its real per-person budget."""

from __future__ import annotations

import asyncio
import statistics
from pathlib import Path

from tests.support.bot_harness import bot_settings, eventually, running_bot
from tests.support.chats import lesson_started
from tests.support.fake_telegram import FakeTelegram

PEOPLE = 40
ATTACK = 240  # updates from one person ...
ATTACK_SECONDS = 10.0  # ... in this long
ATTACKER = 6_666_001
# The guide is the lesson's first page (the rest comes a page per press); a prediction one reply.
MESSAGES = (
    "MLM",
    "The cat sat on the [MASK].",
    "/start",
    "hello there friend",
    "/quiz",
    "/help",
    "What is [MASK] learning?",
    "/guide",
)


async def _holds_at_most(repo, count: int) -> bool:
    return sum(row.user_id == ATTACKER for row in await repo.inbox.unfinished()) <= count


def p95(values: list[float]) -> float:
    return statistics.quantiles(values, n=20, method="inclusive")[-1]


def answered(fake: FakeTelegram, person: int) -> bool:
    """A prediction and the lesson's first page have reached them."""
    return len(fake.sent("sendMessage", person)) >= 2 and lesson_started(fake, person)


async def everyone_asks(fake: FakeTelegram, people: range) -> list[float]:
    """Each person sends a sentence with [MASK] and "MLM" at once; the seconds until both are fully answered."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    for person in people:
        user = fake.user(person, f"P{person}")
        await fake.send_text(user, "The capital of France is [MASK].")
        await fake.send_text(user, "MLM")
    await fake.wait_for(lambda f: all(answered(f, p) for p in people), timeout=120)
    # When each person's last message went out (the fake records the monotonic time of every call).
    finished = {p: max(c.at for c in fake.sent(None, p)) for p in people}
    return [finished[p] - started for p in people]


async def attack(fake: FakeTelegram) -> None:
    """240 updates in ten seconds: messages of every kind the bot answers, and presses of its buttons."""
    user = fake.user(ATTACKER, "Mallory")
    for n in range(ATTACK):
        bot_messages = [
            m for m in list(fake._messages.values()) if m["chat"]["id"] == ATTACKER and m.get("reply_markup")
        ]
        if n % 4 == 3 and bot_messages:
            message = bot_messages[-1]
            data = message["reply_markup"]["inline_keyboard"][0][0].get("callback_data")
            if data:
                await fake.press(user, message, data)
        else:
            await fake.send_text(user, MESSAGES[n % len(MESSAGES)])
        await asyncio.sleep(ATTACK_SECONDS / ATTACK)


async def test_one_person_flooding_the_bot_does_not_slow_the_others(bert_dir: Path, tmp_path: Path) -> None:
    fake = FakeTelegram()
    async with fake.running():
        settings = bot_settings(fake, bert_dir, tmp_path, shutdown_budget_s=3)
        async with running_bot(settings, fake) as repo:
            quiet = await everyone_asks(fake, range(1000, 1000 + PEOPLE))
            await fake.settle(1.0)

            loop = asyncio.get_running_loop()
            attack_started = loop.time()
            flood = asyncio.create_task(attack(fake))
            await asyncio.sleep(1.0)  # the flood is under way when the others come
            under_attack = await everyone_asks(fake, range(2000, 2000 + PEOPLE))
            await flood
            attack_ended = loop.time()
            # The attacker holds no more of the bot's update slots than his in-flight allowance: the rest of his
            # updates were refused at once (and finished), not queued behind his chat's pace for minutes.
            holding = await eventually(lambda: _holds_at_most(repo, settings.actions_in_flight), timeout=5)
            assert holding, "the attacker's updates pile up in the bot"
        assert fake.rejections == []

    print(f"p95 without the attacker {p95(quiet):.1f} s, with {p95(under_attack):.1f} s")
    # Everyone is answered about as fast as without the attacker.
    assert p95(under_attack) <= p95(quiet) + 3.0, (sorted(quiet), sorted(under_attack))
    # Telegram never had to refuse anyone's chat (the bot paces each chat itself).
    assert [chat for chat in fake.flood.floods if chat != ATTACKER] == []
    # The attacker's chat got about one message a second at most: a burst of a few, then the pace.
    times = sorted(c.at for c in fake.sent(None, ATTACKER) if c.method.startswith(("send", "edit")))
    times = [t for t in times if t <= attack_ended]
    assert times, "the attacker's first requests are answered like anyone's"
    for n, at in enumerate(times):
        assert n + 1 <= 4 + 1.1 * (at - times[0]), f"{n + 1} messages within {at - times[0]:.1f} s"
    assert len(times) <= 4 + 1.1 * (attack_ended - attack_started)
    # Told to slow down once (the run is shorter than a minute): in a message, or on a pressed button; then
    # silence. (Only the attacker goes over the budget here; his presses may have switched him to Hinglish.)
    slow_down = ("a lot at once", "Ek saath bahut kuch")
    warned = [c for c in fake.sent("sendMessage", ATTACKER) if any(s in c.params["text"] for s in slow_down)]
    warned += [c for c in fake.sent("answerCallbackQuery") if any(s in (c.params.get("text") or "") for s in slow_down)]
    assert len(warned) == 1
