"""A funnel per post, end to end: a scripted journey under two channel posts (comment -> public reply -> Start by
its link -> asked to join the channel -> joined -> every page -> the quiz -> a prediction) gives exactly those
numbers in ``mlm-bot stats --by-post``, and /stats shows them to the admin."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from bot.text.render import Renderer
from tests.support.bot_harness import bot_settings, eventually, running_bot
from tests.support.chats import CHANNEL as POSTED_IN
from tests.support.chats import GROUP, automatic_forward, bot_messages, comment, keyboard, lesson_started, replies
from tests.support.fake_telegram import FakeTelegram, parse_html
from tests.support.processes import MLM_BOT

pytestmark = pytest.mark.usefixtures("no_token_in_logs")
CHANNEL = {"id": -1001777000444, "type": "channel", "title": "Creator's channel", "username": "creatorchan"}
ADMIN = 950


def by_post(database: Path, *extra: str) -> list[dict]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_", "GUIDES_", "TRIGGER_"))}
    done = subprocess.run(
        [MLM_BOT, "stats", "--by-post", "--json", *extra], env={**env, "DATABASE_URL": f"sqlite+aiosqlite:///{database}"},
        capture_output=True, text=True, timeout=120, check=False, cwd=database.parent,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


async def press_through(fake: FakeTelegram, user: dict) -> None:
    """Next on every page of the newest lesson, to its last page."""
    while True:
        page = [m for m in bot_messages(fake, user["id"]) if "guide:mlm:" in str(keyboard(m))][-1]
        nexts = [b["callback_data"] for row in keyboard(page) for b in row if "▶ (" in b["text"]]
        if not nexts:
            return
        count = len(bot_messages(fake, user["id"]))
        await fake.press(user, page, nexts[0])
        await fake.wait_for(lambda f, c=count: len(bot_messages(f, user["id"])) > c, timeout=30)


async def take_the_quiz(fake: FakeTelegram, user: dict) -> None:
    await fake.send_text(user, "/quiz")
    for number in range(len(Renderer().quiz())):
        await fake.wait_for(lambda f, n=number: len(f.sent("sendPoll", user["id"])) > n, timeout=30)
        sent = [m for m in fake._messages.values() if m["chat"]["id"] == user["id"] and "poll" in m][-1]
        await fake.answer_poll(user, sent["poll"]["id"], [0])
    await fake.wait_for(
        lambda f: any(" of " in parse_html(c.params["text"]) for c in f.sent("sendMessage", user["id"]))
    )


async def test_a_scripted_journey_gives_exactly_its_numbers_per_post(
    fake: FakeTelegram, bert_dir: Path, tmp_path: Path
) -> None:
    fake.add_channel(CHANNEL)
    settings = bot_settings(fake, bert_dir, tmp_path, require_channel="@creatorchan", admin_user_ids=str(ADMIN))
    people = ((601, "Ann"), (602, "Bo"), (603, "Cy"), (604, "Dan"), (605, "Eve"))
    ann, bo, cy, dan, eve = (fake.user(i, name) for i, name in people)
    fake.never_started.update({601, 602, 604, 605})
    fake.set_status(CHANNEL["id"], 603, "member")
    async with running_bot(settings, fake) as repo:
        await fake.send_text(cy, "/start")  # Cy started the bot long ago: her comment gets the guide by DM
        await fake.wait_for(lambda f: bool(f.sent("sendMessage", 603)), timeout=30)
        first_post = await automatic_forward(fake, post_id=41)
        second_post = await automatic_forward(fake, post_id=42)
        for person, text in ((ann, "MLM"), (bo, "MLM please"), (cy, "#mlm"), (eve, "mlm!")):
            await comment(fake, person, first_post, text)
        await comment(fake, dan, second_post, "MLM")
        await fake.wait_for(lambda f: lesson_started(f, 603), timeout=30)
        sent = await replies(fake, GROUP["id"], 2)
        await fake.wait_for(lambda f: sum("Eve" in parse_html(c.params["text"]) for c in f.sent("sendMessage")), 30)
        url = next(c for c in sent if "Ann" in parse_html(c.params["text"])).params["reply_markup"]["inline_keyboard"]
        payload = url[0][0]["url"].split("start=")[1]

        # Ann opens the bot by the button, is asked to join, joins, reads every page, takes the quiz, predicts.
        fake.never_started.discard(601)
        fake.never_started.discard(605)  # Eve opens the bot too, is asked to join, and never does
        await fake.send_text(eve, f"/start {payload}")
        await fake.wait_for(lambda f: any("One step first" in m["text"] for m in bot_messages(f, 605)), timeout=30)
        await fake.send_text(ann, f"/start {payload}")
        await fake.wait_for(lambda f: any("One step first" in m["text"] for m in bot_messages(f, 601)), timeout=30)
        fake.set_status(CHANNEL["id"], 601, "member")
        asked = next(m for m in bot_messages(fake, 601) if "One step first" in m["text"])
        await fake.press(ann, asked, "join:mlm:c")
        await fake.wait_for(lambda f: lesson_started(f, 601), timeout=30)
        await press_through(fake, ann)
        last = [m for m in bot_messages(fake, 601) if "sub:on" in str(keyboard(m))][-1]
        await fake.press(ann, last, "sub:on")  # "🔔 Tell me when there's a new guide"
        await fake.wait_for(lambda f: bool(f.sent("editMessageReplyMarkup", 601)), timeout=30)
        await take_the_quiz(fake, ann)
        await fake.send_text(ann, "The cat sat on the [MASK].")
        await fake.wait_for(lambda f: any("Best guess" in m.get("text", "") for m in bot_messages(f, 601)), 30)
        await eventually(lambda: _quiz_done(repo, 601), 15)

        await fake.send_text(fake.user(ADMIN), "/stats")
        await fake.wait_for(lambda f: len(f.sent("sendPhoto", ADMIN)) == 2, timeout=30)
        shown = parse_html(fake.sent("sendMessage", ADMIN)[-1].params["text"])
        funnel_chart = fake.sent("sendPhoto", ADMIN)[0].params["photo"]  # then the daily chart

    thread = lambda forward: f"{GROUP['id']}:{forward['message_id']}"  # noqa: E731
    funnels = {f["post"]: f for f in by_post(tmp_path / "bot.sqlite3")}
    assert list(funnels) == [thread(second_post), thread(first_post)]  # newest first
    steps = lambda f: {k: v for k, v in f.items() if k not in ("post", "since")}  # noqa: E731
    assert steps(funnels[thread(first_post)]) == {
        "channel_post": f"{POSTED_IN['id']}:41", "comments": 4, "public_replies": 3, "dms_opened": 2,
        "gate_shown": 2, "gate_passed": 1, "guide_started": 2, "guide_finished": 1, "quiz_finished": 1,
        "predictions": 1, "subscriptions": 1,
    }  # fmt: skip
    assert steps(funnels[thread(second_post)]) == {
        "channel_post": f"{POSTED_IN['id']}:42", "comments": 1, "public_replies": 1, "dms_opened": 0,
        "gate_shown": 0, "gate_passed": 0, "guide_started": 0, "guide_finished": 0, "quiz_finished": 0,
        "predictions": 0, "subscriptions": 0,
    }  # fmt: skip
    assert f"Channel post {POSTED_IN['id']}:41" in shown
    assert "4 keyword comments · 📩 3 public replies · 🚪 2 opened the bot by its link" in shown
    assert (
        "2 asked to join the channel, 1 joined" in shown
        and "🔔 1 asked for new guides" in shown
        and "🏁 1 reached its last page" in shown
    )
    assert funnel_chart["filename"] == "mlm-bot-posts.png" and funnel_chart["content"].startswith(b"\x89PNG")
    png = tmp_path / "posts.png"
    assert by_post(tmp_path / "bot.sqlite3", "--png", str(png)) and png.read_bytes().startswith(b"\x89PNG")


async def _quiz_done(repo, user_id: int) -> bool:
    total = len(Renderer().quiz())
    return any(r.user_id == user_id and r.trigger == f"q{total}" for r in await repo.interactions.all())


def test_stats_by_post_on_an_empty_log_says_so(tmp_path: Path) -> None:
    subprocess.run([MLM_BOT, "db", "upgrade"], env={**os.environ, "DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path}/x.db"},
                   capture_output=True, check=True, timeout=120)  # fmt: skip
    assert by_post(tmp_path / "x.db") == []
