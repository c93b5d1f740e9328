"""English or Hinglish, end to end: ``/language``, the language buttons under the greeting and the guide, the
choice remembered per person (across a restart, through the database), and everything the bot then says in that
language, against the fake Bot API (which refuses any message Telegram would refuse)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from bot.chosen_languages import Languages, parse_language
from bot.text.render import Renderer
from tests.support.bot_harness import bot_settings, eventually, running_bot
from tests.support.chats import (
    GROUP,
    automatic_forward,
    bot_messages,
    can_dm,
    comment,
    guide_document,
    guide_received,
    has_said,
    lesson_started,
    replies,
)
from tests.support.fake_telegram import FakeTelegram, parse_html


def buttons(call) -> list[dict[str, Any]]:
    return [b for row in call.params.get("reply_markup", {}).get("inline_keyboard", []) for b in row]


async def new_message(fake: FakeTelegram, chat_id: int, before: int) -> str:
    await fake.wait_for(lambda f: len(f.sent("sendMessage", chat_id)) > before)
    return parse_html(fake.sent("sendMessage", chat_id)[before].params["text"])


async def test_language_command_switches_everything_and_is_remembered_across_a_restart(
    fake: FakeTelegram, settings
) -> None:
    ann, bob = fake.user(80), fake.user(81, "Bob")
    async with running_bot(settings, fake) as live_bot_repo:
        # /language alone: both languages as buttons, the current one ticked.
        await fake.send_text(ann, "/language")
        (chooser,) = await replies(fake, 80)
        assert "Which language" in parse_html(chooser.params["text"])
        assert [(b["text"], b["callback_data"]) for b in buttons(chooser)] == [
            ("✓ 🇬🇧 English", "lang:english"),
            ("🇮🇳 Hinglish", "lang:hinglish"),
        ]
        await fake.press(ann, bot_messages(fake, 80)[-1], "lang:hinglish")
        (confirmed,) = await replies(fake, 80, method="editMessageText")
        assert "Hinglish mein baat karunga" in parse_html(confirmed.params["text"])

        # The guide: Hinglish pages, each valid and short, the same links; the document in Hinglish too.
        before = len(fake.sent("sendMessage", 80))
        await fake.send_text(ann, "MLM")
        guide = await guide_received(fake, 80)
        assert "Masked language model kya hai" in guide and "Chalo, shuru karte hain" in guide
        pages = fake.sent("sendMessage", 80)[before:]
        assert buttons(pages[0])[-1] == {"text": "🇬🇧 Read it in English", "callback_data": "lang:english:guide:mlm"}
        assert buttons(pages[0])[0]["text"] == "Aage ▶ (2/9)"
        assert 'href="https://arxiv.org/abs/1810.04805"' in "".join(p.params["text"] for p in pages)
        document = await guide_document(fake, 80)
        assert document["filename"] == "mlm-guide-hinglish.md"
        assert "Masked language model kya hai" in document["content"].decode()
        await fake.wait_for(lambda f: has_said(f, 80, "Khud try karo"))
        experiments = next(p for p in fake.sent("sendMessage", 80) if "Khud try karo" in parse_html(p.params["text"]))
        assert buttons(experiments)[-1]["text"] == "🧠 Khud ko test karo"

        # A prediction: the words and the buttons in Hinglish, the model's guesses as they are.
        before = len(fake.sent("sendMessage", 80))
        await fake.send_text(ann, "The cat sat on the [MASK].")
        prediction = await new_message(fake, 80, before)
        assert "padh raha hai" in prediction and "poori vocabulary" in prediction
        assert buttons(fake.sent("sendMessage", 80)[-1])[0]["text"] == "🔎 Aur candidates"
        # An error, in Hinglish.
        before = len(fake.sent("sendMessage", 80))
        await fake.send_text(ann, "[MASK] " * 9)
        assert "masks hain" in await new_message(fake, 80, before)

        # The quiz in the person's language.
        await fake.send_text(ann, "/quiz")
        await fake.wait_for(lambda f: bool(f.sent("sendPoll", 80)))
        assert fake.sent("sendPoll", 80)[0].params["question"] == Renderer().quiz("hinglish")[0]["question"]

        # Inline mode too: the guide's result, in their language.
        query_id = await fake.inline(ann, "mlm")
        await fake.wait_for(
            lambda f: any(c.params.get("inline_query_id") == query_id for c in f.sent("answerInlineQuery"))
        )
        (answer,) = [c for c in fake.sent("answerInlineQuery") if c.params["inline_query_id"] == query_id]
        assert "aasan bhasha mein" in answer.params["results"][0]["title"]

        # Someone else still reads English: the choice is per person.
        before = len(fake.sent("sendMessage", 81))
        await fake.send_text(bob, "/help")
        assert "How to use me" in await new_message(fake, 81, before)
        choice = await eventually(lambda: live_bot_repo.users.chosen_language(80))
        assert choice == "hinglish"

    # A new process (nothing in memory): the choice comes back from the database.
    async with running_bot(settings, fake):
        before = len(fake.sent("sendMessage", 80))
        await fake.send_text(ann, "/help")
        assert "Mujhe kaise use karein" in await new_message(fake, 80, before)
        # /language english switches back at once, confirmed in English.
        before = len(fake.sent("sendMessage", 80))
        await fake.send_text(ann, "/language English please")
        assert "I'll write to you in English" in await new_message(fake, 80, before)
        before = len(fake.sent("sendMessage", 80))
        await fake.send_text(ann, "/help")
        assert "How to use me" in await new_message(fake, 80, before)


async def test_the_language_buttons_under_the_greeting_and_the_guide(fake: FakeTelegram, live_bot_repo) -> None:
    ann = fake.user(82)
    await fake.send_text(ann, "/start")
    (greeting,) = await replies(fake, 82)
    assert buttons(greeting)[-1] == {"text": "🇮🇳 Hinglish mein padho", "callback_data": "lang:hinglish:start"}
    # The greeting is rewritten in place, with the way back.
    await fake.press(ann, bot_messages(fake, 82)[-1], "lang:hinglish:start")
    (edited,) = await replies(fake, 82, method="editMessageText")
    assert "Main <b>masked language models</b> (MLM) sikhata hoon" in edited.params["text"]
    assert buttons(edited)[-1] == {"text": "🇬🇧 Read it in English", "callback_data": "lang:english:start"}
    assert buttons(edited)[0]["text"] == "📘 MLM kya hai?"

    # A second tap on the same switch (Telegram still shows it a moment): no error, nothing new to say.
    await fake.press(ann, fake.stored(82, bot_messages(fake, 82)[-1]["message_id"]), "lang:hinglish:start")
    await fake.wait_for(lambda f: len(f.sent("answerCallbackQuery")) >= 2)
    await fake.settle()
    assert len(fake.sent("editMessageText", 82)) == 1 and len(fake.sent("sendMessage", 82)) == 1

    # The guide comes in Hinglish now; its first page's button sends it again in English.
    await fake.send_text(ann, "MLM")
    assert "Masked language model kya hai" in await guide_received(fake, 82)
    first_page = next(c for c in fake.sent("sendMessage", 82) if "lang:english:guide:mlm" in str(c.params))
    shown = next(
        m
        for m in fake._messages.values()
        if m["chat"]["id"] == 82 and m.get("text") == parse_html(first_page.params["text"])
    )
    await fake.press(ann, shown, "lang:english:guide:mlm")
    await fake.wait_for(lambda f: lesson_started(f, 82, 2))
    assert fake.sent("answerCallbackQuery")[-1].params["text"] == "✅ From now on I'll write to you in English"
    assert has_said(fake, 82, "What is a masked language model")
    assert (await guide_document(fake, 82))["filename"] == "mlm-guide.md"
    # A second tap on the same button (already English): answered, the guide not sent a third time.
    answered = len(fake.sent("answerCallbackQuery"))
    await fake.press(ann, shown, "lang:english:guide:mlm")
    await fake.wait_for(lambda f: len(f.sent("answerCallbackQuery")) > answered)
    await fake.settle()
    assert not lesson_started(fake, 82, 3)


@pytest.mark.parametrize("asked", ["klingon", "<b>fr</b> & co"])
async def test_a_language_the_bot_does_not_speak_gets_the_choice(fake: FakeTelegram, live_bot_repo, asked: str) -> None:
    await fake.send_text(fake.user(83), f"/language {asked}")
    (chooser,) = await replies(fake, 83)
    assert f"I don't know the language “{asked}”" in parse_html(chooser.params["text"])
    assert [b["callback_data"] for b in buttons(chooser)] == ["lang:english", "lang:hinglish"]
    assert await live_bot_repo.users.chosen_language(83) is None


async def test_language_in_a_group_points_to_the_private_chat(fake: FakeTelegram, live_bot_repo) -> None:
    await fake.send_text(fake.user(84), "/language hinglish", chat=GROUP)
    (pointer,) = await replies(fake, GROUP["id"])
    assert "private chat" in parse_html(pointer.params["text"])
    await fake.settle()
    assert await live_bot_repo.users.chosen_language(84) is None


async def test_forget_deletes_the_choice_too(fake: FakeTelegram, live_bot_repo) -> None:
    ann = fake.user(85)
    await fake.send_text(ann, "/language hinglish")
    await replies(fake, 85)
    assert await eventually(lambda: live_bot_repo.users.chosen_language(85)) == "hinglish"
    await fake.send_text(ann, "/forget")
    await replies(fake, 85, 2)
    await fake.press(ann, bot_messages(fake, 85)[-1], "forget:yes")
    (done,) = await replies(fake, 85, method="editMessageText")
    assert "Ho gaya" in parse_html(done.params["text"])  # said in the language they were reading
    before = len(fake.sent("sendMessage", 85))
    await fake.send_text(ann, "/help")
    assert "How to use me" in await new_message(fake, 85, before)  # memory forgot too, not just the database
    assert await live_bot_repo.users.chosen_language(85) is None


async def test_comments_get_the_guide_in_the_persons_language_and_public_replies_stay_in_the_default(
    fake: FakeTelegram, live_bot_repo
) -> None:
    ann, bob = fake.user(86), fake.user(87, "Bob")
    # Ann started the bot and chose Hinglish: her comment gets the Hinglish guide by DM.
    await fake.send_text(ann, "/start")
    await fake.send_text(ann, "/language hinglish")
    await replies(fake, 86, 2)
    assert await eventually(lambda: can_dm(live_bot_repo, 86))
    post = await automatic_forward(fake, post_id=9)
    await comment(fake, ann, post, "MLM")
    assert "Masked language model kya hai" in await guide_received(fake, 86)
    # Bob chose Hinglish but never pressed Start: the public reply, for everyone to read, is in English.
    await fake.send_text(bob, "/language hinglish")
    await replies(fake, 87)
    await comment(fake, bob, post, "MLM")
    (public,) = await replies(fake, GROUP["id"])
    assert "your MLM guide is ready" in parse_html(public.params["text"])
    assert buttons(public)[0]["text"] == "📩 Get the MLM guide"


async def test_a_choice_the_database_is_slow_to_give_never_holds_up_the_reply(
    fake: FakeTelegram, settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The one database read on the way to a reply (someone not seen lately) gives up after half a second."""
    from bot.storage.repository import Users

    async def stuck(self, user_id: int) -> str | None:
        await asyncio.sleep(30)
        return "hinglish"

    monkeypatch.setattr(Users, "chosen_language", stuck)
    async with running_bot(settings, fake):
        loop = asyncio.get_running_loop()
        started = loop.time()
        await fake.send_text(fake.user(88), "/help")
        (reply,) = await replies(fake, 88)
        waited = loop.time() - started
    assert "How to use me" in parse_html(reply.params["text"])  # the default, at once
    assert waited < 5  # not the 30 s the read would take


async def test_a_creator_can_make_hinglish_the_default(fake: FakeTelegram, bert_dir: Path, tmp_path: Path) -> None:
    settings = bot_settings(fake, bert_dir, tmp_path, default_language=" Hinglish")
    async with running_bot(settings, fake):
        await fake.send_text(fake.user(89), "/help")  # never chose: the default
        (reply,) = await replies(fake, 89)
        assert "Mujhe kaise use karein" in parse_html(reply.params["text"])
        await fake.send_text(fake.user(89), "/language english")
        await replies(fake, 89, 2)
        await fake.send_text(fake.user(89), "/help")
        await replies(fake, 89, 3)
        assert "How to use me" in parse_html(fake.sent("sendMessage", 89)[-1].params["text"])
    with pytest.raises(ValidationError, match="'english' or 'hinglish'"):
        bot_settings(fake, bert_dir, tmp_path, default_language="french")


async def test_the_language_store_reads_once_and_gives_up_quickly() -> None:
    reads: list[int] = []

    async def read(user_id: int) -> str | None:
        reads.append(user_id)
        if user_id == 2:
            await asyncio.sleep(10)  # a database that does not answer
        return {1: "hinglish", 3: "klingon"}.get(user_id)

    languages = Languages(read, keep=2, timeout=0.05)
    assert await languages.of(1) == "hinglish" and await languages.of(1) == "hinglish"
    assert reads == [1]  # remembered after the first read
    assert await languages.of(2) is None and await languages.of(2) is None
    assert reads == [1, 2, 2]  # a failed read is not remembered: asked again
    assert await languages.of(3) is None  # a value the bot does not speak (an old version's, a hand edit)
    assert await languages.of(None) is None
    languages.remember(4, "english")
    assert await languages.of(4) == "english" and 1 not in languages._known  # the oldest make room (keep=2)
    languages.forget(4)
    assert await languages.of(4) is None


async def test_a_read_that_started_before_a_choice_does_not_undo_it() -> None:
    """Two updates of one person at once, "/start" and "/language hinglish": the first one's read of the
    database (no choice yet) ends after the second one's choice, and must not overwrite it."""
    chose = asyncio.Event()

    async def read(user_id: int) -> str | None:
        await chose.wait()
        return None  # what the database said before the choice was written

    languages = Languages(read)
    reading = asyncio.create_task(languages.of(1))
    await asyncio.sleep(0)
    languages.remember(1, "hinglish")
    chose.set()
    assert await reading == "hinglish"
    assert await languages.of(1) == "hinglish"


@pytest.mark.parametrize(
    ("typed", "language"),
    [
        ("hinglish", "hinglish"),
        (" Hinglish. ", "hinglish"),
        ("HINDI", "hinglish"),
        ("en", "english"),
        ("fr", None),
        ("", None),
    ],
)
def test_what_people_type_after_language(typed: str, language: str | None) -> None:
    assert parse_language(typed) == language
