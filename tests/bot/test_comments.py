"""Keyword comments under channel posts, end to end (real bot, fake Bot API, real SQLite file): the guide by DM
or a public reply, once per person and post."""

from __future__ import annotations

import asyncio

import pytest

from tests.support.bot_harness import eventually
from tests.support.chats import (
    CHANNEL,
    GROUP,
    automatic_forward,
    blocked,
    comment,
    guide_received,
    lesson_started,
    logged_rows,
    replies,
)
from tests.support.fake_telegram import BOT_USERNAME, FakeTelegram, parse_html

pytestmark = pytest.mark.usefixtures("no_token_in_logs")


# ----------------------------------------------------------------------- comments


async def test_comment_button_start_payload_guide_and_once_per_post(fake: FakeTelegram, live_bot_repo) -> None:
    dana = fake.user(60, "Dana")
    fake.never_started.add(60)
    post = await automatic_forward(fake, post_id=7)
    first = await comment(fake, dana, post, "MLM please!")
    (reply,) = await replies(fake, GROUP["id"])
    assert reply.params["reply_parameters"]["message_id"] == first["message_id"]
    assert "Dana" in parse_html(reply.params["text"])
    url = reply.params["reply_markup"]["inline_keyboard"][0][0]["url"]
    assert url == f"https://t.me/{BOT_USERNAME}?start=p{GROUP['id']}_{post['message_id']}"
    assert not fake.sent("sendMessage", 60), "a user who never started the bot cannot be messaged"

    # Dana taps the button: Telegram opens the chat and sends /start <payload>.
    fake.never_started.discard(60)
    await fake.send_text(dana, f"/start {url.split('start=')[1]}")
    assert "Learn more" in await guide_received(fake, 60)

    # A second keyword comment on the same post: no second public reply.
    await comment(fake, dana, post, "mlm again")
    await fake.settle(0.5)
    assert len(fake.sent("sendMessage", GROUP["id"])) == 1

    # On another post, Dana (who started the bot now) gets the guide in her DM and a reaction, no public reply.
    other = await automatic_forward(fake, post_id=8)
    dm_comment = await comment(fake, dana, other, "#MLM")
    await fake.wait_for(lambda f: lesson_started(f, 60, 2))
    await fake.wait_for(lambda f: bool(f.sent("setMessageReaction")))
    assert fake.sent("setMessageReaction")[0].params["message_id"] == str(dm_comment["message_id"])
    assert len(fake.sent("sendMessage", GROUP["id"])) == 1
    logged = await logged_rows(live_bot_repo, "comment", 2)
    assert [i.outcome for i in logged] == ["button", "dm"]
    assert logged[0].trigger == f"MLM on {CHANNEL['id']}:7"


async def test_a_comment_handled_alongside_its_post_still_names_the_post(
    fake: FakeTelegram, live_bot_repo, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Updates are handled concurrently: a comment that arrives with the post's forward (a burst, or the inbox
    replayed after a restart) must not overtake it. The forward's slower language lookup stands in for any wait
    in its handling; remembering the post must come before all of them."""
    from bot.chosen_languages import Languages

    original = Languages.of

    async def slow_for_the_forward(self: Languages, user_id: int | None) -> str | None:
        if user_id == 777000:
            await asyncio.sleep(0.3)
        return await original(self, user_id)

    monkeypatch.setattr(Languages, "of", slow_for_the_forward)
    post = await automatic_forward(fake, post_id=12)
    await comment(fake, fake.user(62, "Finn"), post, "MLM")
    await replies(fake, GROUP["id"])
    (logged,) = await logged_rows(live_bot_repo, "comment")
    assert logged.trigger == f"MLM on {CHANNEL['id']}:12"


async def test_a_user_who_blocked_the_bot_gets_the_button_instead(fake: FakeTelegram, live_bot_repo) -> None:
    eve = fake.user(61, "Eve")
    await fake.send_text(eve, "/start")
    await replies(fake, 61)
    fake.blocked_by.add(61)
    await comment(fake, eve, await automatic_forward(fake, post_id=9), "MLM")
    (reply,) = await replies(fake, GROUP["id"])
    assert "start=p" in reply.params["reply_markup"]["inline_keyboard"][0][0]["url"]
    assert await eventually(lambda: blocked(live_bot_repo, 61))


async def test_a_comment_sent_as_a_channel_is_answered_publicly_only(fake: FakeTelegram, live_bot_repo) -> None:
    post = await automatic_forward(fake, post_id=10)
    await comment(
        fake,
        fake.user(136817688, "Channel"),
        post,
        "MLM",
        sender_chat={"id": -1002, "type": "channel", "title": "Fan page"},
    )
    (reply,) = await replies(fake, GROUP["id"])
    assert "Your MLM guide" in parse_html(reply.params["text"])
    assert not [c for c in fake.calls if c.method == "sendMessage" and int(c.params["chat_id"]) > 0]


async def test_bots_forwards_and_other_group_messages_get_silence(fake: FakeTelegram, live_bot_repo) -> None:
    post = await automatic_forward(fake, post_id=11, text="Comment MLM for the guide")  # the post itself says MLM
    await comment(fake, {"id": 999, "is_bot": True, "first_name": "OtherBot"}, post, "MLM")
    await comment(fake, fake.user(62), post, "great video")
    await comment(fake, fake.user(63), post, "The cat sat on the [MASK].")
    await fake.settle(0.6)
    assert not fake.sent("sendMessage", GROUP["id"])
