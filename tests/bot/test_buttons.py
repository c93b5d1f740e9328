"""A button press acts only where it belongs: ``callback_data`` is written by the client, so data that is not one
of its message's own buttons, a private action pressed in a group, or any press on an inline message gets a
short line on the button and changes nothing (real bot, fake Bot API)."""

from __future__ import annotations

import asyncio

import pytest

from tests.support.fake_telegram import FakeTelegram, parse_html

GROUP = {"id": -1001555000222, "type": "supergroup", "title": "A discussion"}
# Every action a private button can ask for, as a forger would write it.
PRIVATE_ACTIONS = [
    "lang:english:guide", "lang:hinglish", "lang:english:start", "quiz", "try:0", "chart", "more", "fewer:x1",
    "compare", "forget:no", "forget:yes", "tap:abcdefgh:0",
]  # fmt: skip


def bot_messages(fake: FakeTelegram, chat_id: int) -> list[dict]:
    return [m for m in fake._messages.values() if m["chat"]["id"] == chat_id and m.get("from", {}).get("is_bot")]


async def answers(fake: FakeTelegram, count: int) -> list:
    await fake.wait_for(lambda f: len(f.sent("answerCallbackQuery")) >= count)
    await fake.settle(0.4)
    return fake.sent("answerCallbackQuery")


async def test_forged_data_on_the_bots_reply_in_a_group_posts_nothing(fake: FakeTelegram, live_bot_repo) -> None:
    eve = fake.user(301, "Eve")
    await fake.send_text(eve, "/help", chat=GROUP)
    await fake.wait_for(lambda f: bool(f.sent("sendMessage", GROUP["id"])))
    (reply,) = bot_messages(fake, GROUP["id"])
    before = len(fake.calls)
    for n, data in enumerate(PRIVATE_ACTIONS, start=1):  # one after another, as a person presses
        await fake.press(eve, reply, data)
        await fake.wait_for(lambda f, n=n: len(f.sent("answerCallbackQuery")) >= n)
    said = await answers(fake, len(PRIVATE_ACTIONS))
    assert len(said) == len(PRIVATE_ACTIONS), "each press answered once"
    assert all(a.params.get("text") for a in said), "with a short line on the button"
    done = [c.method for c in fake.calls[before:] if c.method != "answerCallbackQuery"]
    assert done == [], "nothing posted, edited or sent anywhere"

    # The one button that belongs there still works: it opens the bot, and posts nothing either.
    await fake.press(eve, reply, "guide")
    guide = (await answers(fake, len(PRIVATE_ACTIONS) + 1))[-1]
    assert guide.params["url"].startswith("https://t.me/")
    assert not fake.sent("sendMessage", GROUP["id"])[1:] and not fake.sent("sendDocument")


async def test_a_private_action_in_a_group_is_refused_even_as_its_own_button(fake: FakeTelegram, live_bot_repo) -> None:
    """A message in a group that carries private buttons (the bot never sends one; a forger's client can show
    one): still refused, with a pointer to the private chat."""
    mia = fake.user(302, "Mia")
    markup = {"inline_keyboard": [[{"text": "🧠", "callback_data": "quiz"}]]}
    shown = fake.message(GROUP, {"id": 123456789, "is_bot": True, "first_name": "MLM Bot"}, "x", reply_markup=markup)
    await fake.press(mia, shown, "quiz")
    (answer,) = await answers(fake, 1)
    assert "private chat" in answer.params["text"] and not fake.sent("sendPoll")


async def test_a_press_on_an_inline_message_is_answered_and_changes_nothing(
    fake: FakeTelegram, live_bot_repo, caplog: pytest.LogCaptureFixture
) -> None:
    """Messages sent through inline mode carry only link buttons; the update of a press on one has no chat
    (``effective_chat`` is None): answered, no traceback, nothing sent."""
    ida = fake.user(303, "Ida")
    before = [c.method for c in fake.calls]
    for n, data in enumerate(("more", "guide", "forget:yes", "lang:english:guide"), 1):
        await fake.push(
            "callback_query",
            {"id": f"q-{data}", "from": ida, "chat_instance": "9", "inline_message_id": "AAAA", "data": data},
        )
        await fake.wait_for(lambda f, n=n: len(f.sent("answerCallbackQuery")) >= n)
    said = await answers(fake, 4)
    assert len(said) == 4 and all("nothing here" in a.params["text"] for a in said)
    assert [c.method for c in fake.calls if c.method != "answerCallbackQuery"] == before
    assert "Traceback" not in caplog.text and "error handling update" not in caplog.text


async def test_data_that_is_not_one_of_the_messages_buttons_does_nothing(fake: FakeTelegram, live_bot_repo) -> None:
    kim = fake.user(304, "Kim")
    await fake.send_text(kim, "The cat sat on the [MASK].")
    await fake.wait_for(lambda f: bool(f.sent("sendMessage", 304)))
    answer = bot_messages(fake, 304)[-1]
    sent = len(fake.sent(None, 304))
    # Buttons the bot puts elsewhere, and a pattern's edge ("$" used to match before a trailing newline).
    for n, data in enumerate(("try:0", "quiz", "lang:english:guide", "lang:english\n", "forget:yes", "more\n"), 1):
        await fake.press(kim, answer, data)
        await fake.wait_for(lambda f, n=n: len(f.sent("answerCallbackQuery")) >= n)
    said = await answers(fake, 6)
    assert all("no longer works" in a.params["text"] for a in said)
    assert len(fake.sent(None, 304)) == sent, "no message, edit, poll or guide for made-up data"
    # The answer's own buttons still work.
    await fake.press(kim, answer, "more")
    await fake.wait_for(lambda f: bool(f.sent("editMessageText", 304)))


async def test_a_button_on_a_message_too_old_to_read_says_so_and_changes_nothing(
    fake: FakeTelegram, live_bot_repo
) -> None:
    ned = fake.user(305, "Ned")
    old = {"chat": {"id": 305, "type": "private", "first_name": "Ned"}, "message_id": 3, "date": 0}  # inaccessible
    await fake.press(ned, old, "forget:yes")
    (answer,) = await answers(fake, 1)
    assert "no longer works" in answer.params["text"]
    assert not fake.sent("sendMessage", 305) and not fake.sent("editMessageText")
    await asyncio.sleep(0)


async def test_over_the_budget_a_person_is_told_once_then_hears_nothing(fake: FakeTelegram, bert_dir, tmp_path) -> None:
    from tests.support.bot_harness import bot_settings, running_bot

    settings = bot_settings(fake, bert_dir, tmp_path, actions_per_minute=3)
    async with running_bot(settings, fake):
        zoe = fake.user(306, "Zoe")
        for _ in range(8):
            await fake.send_text(zoe, "/start")
        await fake.wait_for(lambda f: len(f.sent("sendMessage", 306)) >= 4)
        await fake.settle(1.0)
        texts = [parse_html(c.params["text"]) for c in fake.sent("sendMessage", 306)]
        assert len(texts) == 4, texts  # three greetings, one "slow down"
        assert sum("a lot at once" in t for t in texts) == 1
        # A press over the budget still stops its spinner, without a word.
        await fake.press(zoe, bot_messages(fake, 306)[0], "guide")
        (answer,) = await answers(fake, 1)
        assert not answer.params.get("text") and len(fake.sent("sendMessage", 306)) == 4
