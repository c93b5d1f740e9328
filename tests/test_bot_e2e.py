"""The real bot, end to end: ``bot.runner.serve`` (what ``mlm-bot run`` runs) with the real python-telegram-bot
Application, a real SQLite file and a tiny real model, against the fake Bot API server on 127.0.0.1."""

from __future__ import annotations

import asyncio
import logging
import re
import threading
from pathlib import Path
from typing import Any

import pytest

from bot.logs import pseudonym
from bot.payloads import guide_payload
from bot.rate_limits import BUSY_AT
from bot.storage.tables import Interaction
from models.client import LocalFillMask
from models.engine import FillMaskEngine
from tests.bot_harness import bot_settings, eventually, running_bot
from tests.fake_telegram import BOT_USERNAME, TOKEN, FakeTelegram, parse_html
from tests.test_storage import hold_write_lock

GROUP = {"id": -1001555000111, "type": "supergroup", "title": "Creator's discussion"}
CHANNEL = {"id": -1001999000222, "type": "channel", "title": "Creator's channel"}


@pytest.fixture(autouse=True)
def no_token_in_logs(caplog: pytest.LogCaptureFixture):
    caplog.set_level(logging.DEBUG)
    yield
    assert TOKEN not in caplog.text
    assert TOKEN.split(":")[1] not in caplog.text


def texts(fake: FakeTelegram, chat_id: int) -> list[str]:
    return [c.params["text"] for c in fake.sent("sendMessage", chat_id)]


async def replies(fake: FakeTelegram, chat_id: int, count: int = 1, method: str = "sendMessage") -> list[Any]:
    await fake.wait_for(lambda f: len(f.sent(method, chat_id)) >= count)
    return fake.sent(method, chat_id)


async def guide_received(fake: FakeTelegram, chat_id: int) -> str:
    """Waits for the guide (messages, then the .md document) and returns the messages' visible text."""
    await replies(fake, chat_id, 1, "sendDocument")
    return "\n".join(parse_html(t) for t in texts(fake, chat_id))


async def interactions(repo, kind: str | None = None, count: int = 1) -> list[Interaction]:
    """The logged interactions (of ``kind``), waiting up to 10 s for ``count`` of them: the log is written
    after the reply, so a test that has seen the reply may look a moment too early."""
    for _ in range(100):
        rows = [i for i in await repo.interactions.all() if kind is None or i.kind == kind]
        if len(rows) >= count:
            return rows
        await asyncio.sleep(0.1)
    return rows


# ---------------------------------------------------------------- start, help, guide


async def test_start_greets_registers_commands_and_allows_dms(fake: FakeTelegram, repo) -> None:
    ann = fake.user(42)
    await fake.send_text(ann, "/start")
    (greeting,) = await replies(fake, 42)
    visible = parse_html(greeting.params["text"])
    assert "masked language models" in visible and "[MASK]" in visible and f"@{BOT_USERNAME}" in visible
    menus = {c.params.get("scope", {}).get("type", "default"): c.params["commands"] for c in fake.sent("setMyCommands")}
    # /predict, /quiz and /forget work in private chats only: only their menu shows them.
    assert [c["command"] for c in menus["default"]] == ["start", "guide", "help"]
    assert [c["command"] for c in menus["all_private_chats"]] == [
        "start",
        "guide",
        "predict",
        "compare",
        "quiz",
        "language",
        "help",
        "forget",
    ]
    assert await eventually(lambda: _can_dm(repo, 42))


@pytest.mark.parametrize("text", ["MLM", "mlm?", "#MLM", "send me MLM please", "Ｍｌｍ", "M\u200bLM!"])
async def test_keyword_in_a_dm_sends_the_guide_and_the_document(fake: FakeTelegram, repo, text: str) -> None:
    ann = fake.user(43)
    await fake.send_text(ann, text)
    guide = await guide_received(fake, 43)
    for part in (
        "What is a masked language model",
        "The cat sat on the mat",
        "[MASK]",
        "training objective",
        "Bidirectional",
        "RoBERTa",
        "ALBERT",
        "DistilBERT",
        "mask_token_id",
        "Summary",
        "Learn more",
    ):
        assert part in guide
    messages = fake.sent("sendMessage", 43)
    assert all(len(parse_html(m.params["text"])) <= 4096 for m in messages)
    assert 'href="https://arxiv.org/abs/1810.04805"' in "".join(m.params["text"] for m in messages)
    last_page = next(m for m in messages if "Learn more" in parse_html(m.params["text"]))
    buttons = [b for row in last_page.params["reply_markup"]["inline_keyboard"] for b in row]
    assert {b["url"] for b in buttons} >= {
        "https://arxiv.org/abs/1810.04805",
        "https://huggingface.co/docs/transformers/index",
    }
    document = fake.sent("sendDocument", 43)[0].params["document"]
    assert document["filename"] == "mlm-guide.md"
    markdown = document["content"].decode()
    assert markdown.startswith("# 🧠") and "[BERT](https://huggingface.co/google-bert/bert-base-uncased)" in markdown
    logged = await interactions(repo, "guide")
    assert logged and logged[0].trigger == "MLM"


@pytest.mark.parametrize("text", ["html", "xmlm", "mlmodel", "I like HTML5"])
async def test_words_that_merely_contain_the_letters_get_the_hint_not_the_guide(
    fake: FakeTelegram, repo, text: str
) -> None:
    await fake.send_text(fake.user(44), text)
    (hint,) = await replies(fake, 44)
    assert "[MASK]" in parse_html(hint.params["text"])
    await fake.settle()
    assert not fake.sent("sendDocument", 44)


@pytest.mark.parametrize("payload", ["mlm", "inline", f"p{GROUP['id']}_77"])
async def test_every_payload_the_bot_hands_out_sends_the_guide(fake: FakeTelegram, repo, payload: str) -> None:
    await fake.send_text(fake.user(45), f"/start {payload}")
    assert "Learn more" in await guide_received(fake, 45)
    assert (await repo.users.get(45)).can_dm


@pytest.mark.parametrize("payload", ["<script>", "x" * 65, "p123_abc", "nonsense"])
async def test_unknown_or_crafted_payloads_get_the_greeting(fake: FakeTelegram, repo, payload: str) -> None:
    await fake.send_text(fake.user(46), f"/start {payload}")
    (greeting,) = await replies(fake, 46)
    assert "I teach" in parse_html(greeting.params["text"])


async def test_help_and_guide_commands(fake: FakeTelegram, repo) -> None:
    bob = fake.user(47)
    await fake.send_text(bob, "/help")
    (help_message,) = await replies(fake, 47)
    assert "Up to 5 masks" in parse_html(help_message.params["text"])
    await fake.send_text(bob, "/guide")
    assert "Summary" in await guide_received(fake, 47)
    await fake.send_text(fake.user(48), "/guide@mlm_test_bot", chat=GROUP)
    (in_group,) = await replies(fake, GROUP["id"])
    button = in_group.params["reply_markup"]["inline_keyboard"][0][0]
    assert button["url"] == f"https://t.me/{BOT_USERNAME}?start=mlm"


# ----------------------------------------------------------------------- predictions


async def test_a_dm_with_a_mask_gets_typing_then_the_predictions(
    fake: FakeTelegram, repo, bert_engine: FillMaskEngine
) -> None:
    ann = fake.user(50)
    sentence = "The cat sat on the [MASK]."
    question = await fake.send_text(ann, sentence)
    (answer,) = await replies(fake, 50)
    assert fake.sent("sendChatAction", 50)[0].params["action"] == "typing"
    expected = bert_engine.fill(sentence, top_k=5, words_only=True).masks[0]
    visible = parse_html(answer.params["text"])
    for p in expected:
        assert p.token_str in visible
    assert f"{expected[0].score * 100:.1f}%" in visible
    # The person's own sentence, capitals and spacing kept (the uncased model's sequence is all lower case).
    assert f"Best guess: The cat sat on the {expected[0].token_str}." in visible
    # Bars on one absolute scale: a 12% guess does not draw the full bar a 62% one would.
    bars = [line.split()[2] for line in visible.splitlines() if line[:2] in ("1.", "2.", "3.", "4.", "5.")]
    assert [bar.count("▓") for bar in bars] == [round(p.score * 10) for p in expected]
    assert "whole vocabulary" in visible
    assert answer.params["reply_parameters"]["message_id"] == question["message_id"]
    rows = [[b["callback_data"] for b in row] for row in answer.params["reply_markup"]["inline_keyboard"]]
    assert rows == [["more", "chart"], ["compare", "guide"]]

    sent = [m for m in fake._messages.values() if m["chat"]["id"] == 50 and m.get("from", {}).get("is_bot")]
    await fake.press(ann, sent[-1], "more")
    (edit,) = await replies(fake, 50, 1, "editMessageText")
    more = bert_engine.fill(sentence, top_k=15, words_only=True).masks[0]
    assert all(p.token_str in parse_html(edit.params["text"]) for p in more)
    assert edit.params["reply_markup"]["inline_keyboard"][0][0]["callback_data"] == "fewer"
    await fake.press(ann, fake.stored(50, sent[-1]["message_id"]), "fewer")
    await replies(fake, 50, 2, "editMessageText")
    await fake.press(ann, sent[-1], "guide")
    assert "Summary" in await guide_received(fake, 50)

    first = (await interactions(repo, "prediction"))[0]
    assert first.input_text == sentence and first.user_id == 50 and first.chat_type == "private"
    assert [row["token"] for row in first.predictions[0]] == [p.token_str for p in expected]
    assert first.latency_ms > 0 and first.model_name == str(Path(first.model_name))


async def test_several_masks_show_each_list_and_the_best_sentence(
    fake: FakeTelegram, repo, bert_engine: FillMaskEngine
) -> None:
    sentence = "[MASK] sat on the [mask] ."
    await fake.send_text(fake.user(51), sentence)
    (answer,) = await replies(fake, 51)
    visible = parse_html(answer.params["text"])
    assert "[MASK] 1" in visible and "[MASK] 2" in visible
    steps = sorted(bert_engine.fill_joint(sentence, words_only=True).steps, key=lambda step: step.mask_index)
    first, second = (step.token_str for step in steps)
    # Filled into the person's text; the word that starts the sentence gets its capital.
    assert f"Best sentence: {first[:1].upper() + first[1:]} sat on the {second} ." in visible


async def test_predict_command(fake: FakeTelegram, repo) -> None:
    carol = fake.user(52)
    await fake.send_text(carol, "/predict")
    (usage,) = await replies(fake, 52)
    assert "/predict The cat sat on the [MASK]." in parse_html(usage.params["text"])
    await fake.send_text(carol, "/predict The dog ran to the [MASK].")
    answer = (await replies(fake, 52, 2))[1]
    assert "The dog ran to the [MASK]." in parse_html(answer.params["text"])


# ----------------------------------------------------------------------- comments


async def automatic_forward(
    fake: FakeTelegram, post_id: int, text: str = "New video: MLM explained! Comment MLM"
) -> dict:
    forward = fake.message(
        GROUP,
        fake.user(777000, "Telegram"),
        text,
        is_automatic_forward=True,
        sender_chat=CHANNEL,
        forward_origin={"type": "channel", "date": 0, "chat": CHANNEL, "message_id": post_id},
    )
    await fake.push("message", forward)
    return forward


async def comment(fake: FakeTelegram, user: dict | None, forward: dict, text: str, **extra: Any) -> dict:
    message = fake.message(
        GROUP, user, text, reply_to_message=forward, message_thread_id=forward["message_id"], **extra
    )
    await fake.push("message", message)
    return message


async def test_comment_button_start_payload_guide_and_once_per_post(fake: FakeTelegram, repo) -> None:
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
    await replies(fake, 60, 2, "sendDocument")
    await fake.wait_for(lambda f: bool(f.sent("setMessageReaction")))
    assert fake.sent("setMessageReaction")[0].params["message_id"] == str(dm_comment["message_id"])
    assert len(fake.sent("sendMessage", GROUP["id"])) == 1
    logged = await interactions(repo, "comment", 2)
    assert [i.outcome for i in logged] == ["button", "dm"]
    assert logged[0].trigger == f"MLM on {CHANNEL['id']}:7"


async def test_a_comment_handled_alongside_its_post_still_names_the_post(
    fake: FakeTelegram, repo, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Updates are handled concurrently: a comment that arrives with the post's forward (a burst, or the inbox
    replayed after a restart) must not overtake it. The forward's slower language lookup stands in for any wait
    in its handling; remembering the post must come before all of them."""
    from bot.languages import Languages

    original = Languages.of

    async def slow_for_the_forward(self: Languages, user_id: int | None) -> str | None:
        if user_id == 777000:
            await asyncio.sleep(0.3)
        return await original(self, user_id)

    monkeypatch.setattr(Languages, "of", slow_for_the_forward)
    post = await automatic_forward(fake, post_id=12)
    await comment(fake, fake.user(62, "Finn"), post, "MLM")
    await replies(fake, GROUP["id"])
    (logged,) = await interactions(repo, "comment")
    assert logged.trigger == f"MLM on {CHANNEL['id']}:12"


async def test_a_user_who_blocked_the_bot_gets_the_button_instead(fake: FakeTelegram, repo) -> None:
    eve = fake.user(61, "Eve")
    await fake.send_text(eve, "/start")
    await replies(fake, 61)
    fake.blocked_by.add(61)
    await comment(fake, eve, await automatic_forward(fake, post_id=9), "MLM")
    (reply,) = await replies(fake, GROUP["id"])
    assert "start=p" in reply.params["reply_markup"]["inline_keyboard"][0][0]["url"]
    assert await eventually(lambda: _blocked(repo, 61))


async def test_a_comment_sent_as_a_channel_is_answered_publicly_only(fake: FakeTelegram, repo) -> None:
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


async def test_bots_forwards_and_other_group_messages_get_silence(fake: FakeTelegram, repo) -> None:
    post = await automatic_forward(fake, post_id=11, text="Comment MLM for the guide")  # the post itself says MLM
    await comment(fake, {"id": 999, "is_bot": True, "first_name": "OtherBot"}, post, "MLM")
    await comment(fake, fake.user(62), post, "great video")
    await comment(fake, fake.user(63), post, "The cat sat on the [MASK].")
    await fake.settle(0.6)
    assert not fake.sent("sendMessage", GROUP["id"])


# ----------------------------------------------------------------------- inline mode


async def test_inline_mode(fake: FakeTelegram, repo, bert_engine: FillMaskEngine) -> None:
    frank = fake.user(70)
    await fake.inline(frank, "The cat sat on the [MASK].")
    await fake.wait_for(lambda f: len(f.sent("answerInlineQuery")) >= 1)
    answer = fake.sent("answerInlineQuery")[0].params
    expected = bert_engine.fill("The cat sat on the [MASK].", words_only=True).masks[0]
    titles = [r["title"] for r in answer["results"]]
    assert len(titles) == 6 and all(p.token_str in title for p, title in zip(expected, titles[1:], strict=True))
    assert answer["button"]["start_parameter"] == "inline"

    await fake.inline(frank, "mlm")
    await fake.wait_for(lambda f: len(f.sent("answerInlineQuery")) >= 2)
    (guide,) = fake.sent("answerInlineQuery")[1].params["results"]
    assert guide["reply_markup"]["inline_keyboard"][0][0]["url"] == f"https://t.me/{BOT_USERNAME}?start=mlm"

    await fake.inline(frank, "")
    await fake.inline(frank, "[MASK] " * 9)
    await fake.wait_for(lambda f: len(f.sent("answerInlineQuery")) >= 4)
    empty, problem = (c.params for c in fake.sent("answerInlineQuery")[2:4])
    assert empty["results"] == []
    # A refusal is said in the button above the results: no result that would post an error into the chat.
    assert problem["results"] == [] and "up to 5" in problem["button"]["text"]


# ----------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("🙂🙂🙂", "I didn't find a [MASK]"),
        ("", "I read text only"),
        ("/unknowncommand", "I didn't find a [MASK]"),
        ("[MASK] " * 30, "I can fill up to 5"),
        ("<b>bold</b> & <i [MASK] </script> &amp;", "reads: <b>bold</b> & <i [MASK] </script> &amp;"),
        ("*bold* _it_ [link](x) `code` ~s~ || [MASK] \\", "reads: *bold* _it_ [link](x) `code` ~s~ || [MASK] \\"),
        ("مرحبا [MASK] عالم \u200f\u200b", "Best guess"),
        ("[MASK]", "Best guess"),
        ("The cat sat on the [MASK]. " + "And then it slept for a long while. " * 110, "read only the part around"),
        ("And then it slept for a long while. " * 100 + "The cat sat on the [MASK].", "The cat sat on the [MASK]."),
        ("x" * 4096, "I didn't find a [MASK]"),
        ("[MASK] " + "y" * 4000, "Best guess"),
    ],
)
async def test_every_odd_input_gets_a_clear_valid_reply(fake: FakeTelegram, repo, text: str, expected: str) -> None:
    user = fake.user(80)
    if text:
        await fake.send_text(user, text[:4096])
    else:  # a sticker: no text at all
        await fake.send_text(
            user,
            None,
            sticker={
                "file_id": "s",
                "file_unique_id": "s",
                "type": "regular",
                "width": 1,
                "height": 1,
                "is_animated": False,
                "is_video": False,
            },
        )
    (answer,) = await replies(fake, 80)
    assert expected in parse_html(answer.params["text"])


async def test_an_internal_error_is_logged_with_context_and_answered_politely(
    fake: FakeTelegram, settings, bert_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    class Broken(LocalFillMask):
        async def fill_mask(self, text: str, **kwargs: Any):
            raise RuntimeError("the model fell over")

    async with running_bot(settings, fake, model=Broken(settings)):
        await fake.send_text(fake.user(81), "The cat sat on the [MASK].")
        (answer,) = await replies(fake, 81)
    assert "Something went wrong on my side" in parse_html(answer.params["text"])
    # The line names the person by a pseudonym, never by the id (a log outlives /forget).
    assert "the model fell over" in caplog.text and f"user={pseudonym(81)}" in caplog.text
    assert "81" not in caplog.text.replace(pseudonym(81), "").split("error handling update", 1)[1].splitlines()[0]


# ----------------------------------------------------------------------- limits


class SlowModel(LocalFillMask):
    """The real model, held at a gate: lets a test keep a request in flight."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.gate = asyncio.Event()

    async def fill_mask(self, text: str, **kwargs: Any):
        await self.gate.wait()
        return await super().fill_mask(text, **kwargs)


async def test_one_request_in_flight_per_user_and_others_are_not_blocked(fake: FakeTelegram, settings) -> None:
    model = SlowModel(settings)
    async with running_bot(settings, fake, model=model):
        gina, hal = fake.user(90), fake.user(91)
        await fake.send_text(gina, "The cat sat on the [MASK].")
        await fake.wait_for(lambda f: bool(f.sent("sendChatAction", 90)))
        await fake.send_text(gina, "The dog sat on the [MASK].")
        (wait,) = await replies(fake, 90)
        assert "Still working on your previous sentence" in parse_html(wait.params["text"])
        await fake.send_text(hal, "/help")  # another user is answered while Gina's request waits
        await replies(fake, 91)
        model.gate.set()
        answers = await replies(fake, 90, 2)
        assert "Best guess" in parse_html(answers[1].params["text"])


async def test_per_user_rate_limit(fake: FakeTelegram, bert_dir: Path, tmp_path: Path) -> None:
    settings = bot_settings(fake, bert_dir, tmp_path, predictions_per_minute=3)
    async with running_bot(settings, fake):
        ivy = fake.user(92)
        for i in range(4):
            await fake.send_text(ivy, f"The cat number {i} sat on the [MASK].")
            await replies(fake, 92, i + 1)
        assert "Try again in" in parse_html(texts(fake, 92)[-1])
        assert all("Best guess" in parse_html(t) for t in texts(fake, 92)[:3])


async def test_a_burst_of_100_users_with_429_answers_loses_no_reply(fake: FakeTelegram, repo) -> None:
    fake.too_many_requests = 3  # Telegram says "retry after 1 s" three times during the burst
    users = [fake.user(1000 + i, f"User{i}") for i in range(100)]
    for user in users:
        await fake.send_text(user, f"User {user['id']} thinks the cat sat on the [MASK].")
    await fake.wait_for(lambda f: all(f.sent("sendMessage", u["id"]) for u in users), timeout=90)
    for user in users:
        (answer,) = fake.sent("sendMessage", user["id"])
        assert f"User {user['id']} thinks" in parse_html(answer.params["text"])
    refused = [c for c in fake.calls if "_rejected" in c.params]
    assert len(refused) == 3 and all("Too Many Requests" in c.params["_rejected"] for c in refused)


async def test_a_viral_post_gets_few_group_messages_naming_everyone_and_dms_stay_fast(fake: FakeTelegram, repo) -> None:
    post = await automatic_forward(fake, post_id=12)
    people = [fake.user(3000 + i, f"Fan{i}") for i in range(45)]
    for person in people:
        fake.never_started.add(person["id"])
        await comment(fake, person, post, "MLM 🙏")
    await fake.send_text(fake.user(3999), "/start")  # someone pressing Start meanwhile is answered at once
    await fake.wait_for(lambda f: bool(f.sent("sendMessage", 3999)), timeout=5)
    await fake.wait_for(
        lambda f: (
            sum(len(re.findall(r"tg://user\?id=", c.params["text"])) for c in f.sent("sendMessage", GROUP["id"])) >= 45
        ),
        timeout=20,
    )
    replies_sent = fake.sent("sendMessage", GROUP["id"])
    assert 3 <= len(replies_sent) <= 6  # 20 names at most per message, instead of 45 messages
    named = [int(i) for c in replies_sent for i in re.findall(r"tg://user\?id=(\d+)", c.params["text"])]
    assert sorted(named) == [p["id"] for p in people]  # everyone, exactly once
    assert "your MLM guides are ready" in parse_html(replies_sent[0].params["text"])
    assert len(await interactions(repo, "comment", 45)) == 45


async def _can_dm(repo, user_id: int) -> bool:
    row = await repo.users.get(user_id)
    return bool(row and row.can_dm)


async def _blocked(repo, user_id: int) -> bool:
    row = await repo.users.get(user_id)
    return bool(row and row.blocked and not row.can_dm)


async def test_a_locked_database_delays_the_bookkeeping_never_the_reply(
    fake: FakeTelegram, repo, tmp_path: Path
) -> None:
    """Another process holds the write lock for longer than the bot's busy timeout (5 s): /start, a deep link and
    a keyword comment are still answered (once per post), and the bookkeeping is written when the lock goes."""
    locked = threading.Event()
    holder = threading.Thread(target=hold_write_lock, args=(tmp_path / "bot.sqlite3", 8.0, locked))
    holder.start()
    await asyncio.to_thread(locked.wait)
    try:
        ann, ben = fake.user(70, "Ann"), fake.user(71, "Ben")
        fake.never_started.add(71)
        await fake.send_text(ann, "/start")
        (greeting,) = await replies(fake, 70)
        assert "masked language models" in parse_html(greeting.params["text"])
        await fake.send_text(ann, f"/start {guide_payload()}")
        assert "Learn more" in await guide_received(fake, 70)
        post = await automatic_forward(fake, post_id=20)
        await comment(fake, ben, post, "MLM")
        await comment(fake, ben, post, "MLM!!")
        (reply,) = await replies(fake, GROUP["id"])
        assert "Ben" in parse_html(reply.params["text"])
        await fake.settle(1.0)
        assert len(fake.sent("sendMessage", GROUP["id"])) == 1, "still once per person per post"
        assert not [t for t in texts(fake, 70) if "went wrong" in t]
    finally:
        await asyncio.to_thread(holder.join)
    assert await eventually(lambda: _can_dm(repo, 70), timeout=20)
    assert await eventually(lambda: _claimed(repo, f"{GROUP['id']}:{post['message_id']}", 71), timeout=20)


async def _claimed(repo, post_key: str, user_id: int) -> bool:
    return not await repo.comments.claim(post_key, user_id)  # taken already: the background write landed


async def test_a_reply_whose_comment_was_deleted_goes_under_the_post_not_into_the_group(
    fake: FakeTelegram, repo
) -> None:
    gil = fake.user(62, "Gil")
    fake.never_started.add(62)
    post = await automatic_forward(fake, post_id=30)
    gone = await comment(fake, gil, post, "MLM")
    fake.deleted.add((GROUP["id"], gone["message_id"]))  # Gil deletes the comment before the reply goes out
    (reply,) = await replies(fake, GROUP["id"])
    assert reply.params["reply_parameters"]["message_id"] == post["message_id"], "under the post: in the thread"
    assert "_sent_without_reply" not in reply.params
    assert '<a href="tg://user?id=62">Gil</a>' in reply.params["text"]


async def test_commenters_wait_for_the_next_try_when_a_reply_fails(fake: FakeTelegram, repo) -> None:
    hal = fake.user(63, "Hal")
    fake.never_started.add(63)
    fake.server_errors = 2  # Telegram answers 502 twice
    await comment(fake, hal, await automatic_forward(fake, post_id=31), "MLM")
    (reply,) = await replies(fake, GROUP["id"])
    assert "Hal" in parse_html(reply.params["text"])
    (logged,) = await interactions(repo, "comment")
    assert logged.outcome == "button"


async def test_editing_a_command_does_not_run_it_again(fake: FakeTelegram, repo) -> None:
    ivy = fake.user(64)
    sent = await fake.send_text(ivy, "/predict the cat sat on the [MASK] .")
    await replies(fake, 64)
    edited = {**sent, "text": "/predict the dog sat on the [MASK] .", "edit_date": sent["date"] + 5}
    await fake.push("edited_message", edited)
    guide = {**(await fake.send_text(ivy, "/guide")), "edit_date": 1}
    await guide_received(fake, 64)
    await fake.push("edited_message", {**guide, "text": "/guide please"})
    await fake.settle(1.0)
    assert len(fake.sent("sendDocument", 64)) == 1, "the edit of /guide sent no second guide"
    assert sum("Best guess" in parse_html(t) for t in texts(fake, 64)) == 1


async def test_stats_in_a_group_points_to_the_private_chat(fake: FakeTelegram, bert_dir: Path, tmp_path: Path) -> None:
    admin = fake.user(65, "Admin")
    settings = bot_settings(fake, bert_dir, tmp_path, admin_user_ids="65")
    async with running_bot(settings, fake):
        await fake.push("message", fake.message(GROUP, admin, "/stats"))
        (reply,) = await replies(fake, GROUP["id"])
        assert "private chat" in parse_html(reply.params["text"])
        assert not fake.sent("sendPhoto"), "no numbers or charts in public"


async def test_a_reply_to_a_message_deleted_meanwhile_still_goes_out(fake: FakeTelegram, repo) -> None:
    jo = fake.user(66)
    question = await fake.send_text(jo, "The cat sat on the [MASK].")
    fake.deleted.add((66, question["message_id"]))
    (answer,) = await replies(fake, 66)
    assert "Best guess" in parse_html(answer.params["text"])


async def test_a_burst_of_predictions_spends_the_allowance_on_replies_not_typing(fake: FakeTelegram, repo) -> None:
    users = [fake.user(2000 + i) for i in range(40)]
    await asyncio.gather(*(fake.send_text(u, f"The {i} cat sat on the [MASK].") for i, u in enumerate(users)))
    await fake.wait_for(lambda f: len(f.sent("sendMessage")) >= 40, timeout=60)
    # The first few get "typing..." (3 here, even on a loaded machine); past that it is a burst, and the limiter's
    # 30 calls a second go to replies.
    assert len(fake.sent("sendChatAction")) <= 2 * BUSY_AT, "typing actions would take replies' places"


async def test_an_edit_telegram_refuses_is_reported_not_swallowed(
    fake: FakeTelegram, repo, caplog: pytest.LogCaptureFixture
) -> None:
    kim = fake.user(67)
    question = await fake.send_text(kim, "The cat sat on the [MASK].")
    await replies(fake, 67)
    answer = next(m for m in reversed(list(fake._messages.values())) if m["chat"]["id"] == 67)
    fake._messages.pop((67, answer["message_id"]))  # the answer is gone by the time the button is pressed
    await fake.press(kim, {**answer, "reply_to_message": question}, "more")
    await fake.wait_for(lambda f: bool(f.rejections))
    await fake.settle(0.5)
    assert "message to edit not found" in caplog.text.lower(), "only 'message is not modified' may pass in silence"
    assert len(fake.sent("answerCallbackQuery")) >= 1
    fake.rejections.clear()  # that refusal is this test's subject


async def test_an_unreachable_model_worker_reads_as_offline_not_busy(
    fake: FakeTelegram, bert_dir: Path, tmp_path: Path
) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens here
    settings = bot_settings(fake, bert_dir, tmp_path, model_worker_url=f"http://127.0.0.1:{port}", model_deadline_s=2)
    async with running_bot(settings, fake):
        await fake.send_text(fake.user(68), "The cat sat on the [MASK].")
        (reply,) = await replies(fake, 68)
        text = parse_html(reply.params["text"])
        assert "offline" in text and "busy" not in text
        await fake.inline(fake.user(68), "a [MASK] here")
        await fake.wait_for(lambda f: bool(f.sent("answerInlineQuery")))
        assert "offline" in fake.sent("answerInlineQuery")[0].params["button"]["text"]


# ----------------------------------------------------------------------- buttons: one answer each


def _bot_messages(fake: FakeTelegram, chat_id: int) -> list[dict]:
    return [m for m in fake._messages.values() if m["chat"]["id"] == chat_id and m.get("from", {}).get("is_bot")]


async def test_unknown_or_old_button_data_is_answered_once(fake: FakeTelegram, repo) -> None:
    lee = fake.user(95)
    await fake.send_text(lee, "/start")
    await replies(fake, 95)
    await fake.press(lee, _bot_messages(fake, 95)[-1], "v1:some-old-button")
    await fake.wait_for(lambda f: bool(f.sent("answerCallbackQuery")))
    await fake.settle(0.3)
    (answer,) = fake.sent("answerCallbackQuery")
    assert "no longer works" in answer.params["text"]


async def test_pressing_more_twice_makes_no_edit_telegram_would_refuse(fake: FakeTelegram, repo) -> None:
    mo = fake.user(96)
    await fake.send_text(mo, "The cat sat on the [MASK].")
    await replies(fake, 96)
    shown = _bot_messages(fake, 96)[-1]
    await fake.press(mo, shown, "more")
    await replies(fake, 96, 1, "editMessageText")
    await fake.press(mo, fake.stored(96, shown["message_id"]), "more")  # the same answer again
    await fake.wait_for(lambda f: len(f.sent("answerCallbackQuery")) >= 2)
    await fake.settle(0.5)
    assert len(fake.sent("editMessageText")) == 1 and len(fake.sent("answerCallbackQuery")) == 2


async def test_the_guide_button_in_a_group_opens_the_bot_instead_of_posting_the_guide(fake: FakeTelegram, repo) -> None:
    oz = fake.user(98)
    await fake.send_text(oz, "/help", chat=GROUP)  # the bot's answer in the group carries the guide button
    await replies(fake, GROUP["id"])
    (shared,) = _bot_messages(fake, GROUP["id"])
    await fake.press(oz, shared, "guide")
    await fake.wait_for(lambda f: bool(f.sent("answerCallbackQuery")))
    await fake.settle(0.3)
    (answer,) = fake.sent("answerCallbackQuery")
    assert answer.params["url"] == f"https://t.me/{BOT_USERNAME}?start=mlm"
    assert len(fake.sent("sendMessage", GROUP["id"])) == 1, "nothing after the /help answer"
    assert not fake.sent("sendDocument", GROUP["id"])


async def test_an_error_after_the_answer_does_not_answer_the_press_again(
    fake: FakeTelegram, settings, bert_dir: Path, tmp_path: Path
) -> None:
    class BreaksOnMore(LocalFillMask):
        async def fill_mask(self, text: str, **kwargs: Any):
            if kwargs.get("top_k") == 15:
                raise RuntimeError("the model fell over")
            return await super().fill_mask(text, **kwargs)

    async with running_bot(settings, fake, model=BreaksOnMore(settings)):
        pat = fake.user(99)
        await fake.send_text(pat, "The cat sat on the [MASK].")
        await replies(fake, 99)
        await fake.press(pat, _bot_messages(fake, 99)[-1], "more")
        await replies(fake, 99, 2)  # the polite "something went wrong"
        await fake.settle(0.5)
    assert len(fake.sent("answerCallbackQuery")) == 1


async def test_the_chart_button_sends_a_picture_of_the_candidates(
    fake: FakeTelegram, repo, bert_engine: FillMaskEngine
) -> None:
    from io import BytesIO

    from matplotlib.image import imread

    ann = fake.user(58)
    sentence = "The [MASK] costs $5 🙂"
    await fake.send_text(ann, sentence)
    await replies(fake, 58)
    shown = _bot_messages(fake, 58)[-1]
    await fake.press(ann, shown, "chart")
    (photo,) = await replies(fake, 58, method="sendPhoto")
    png = photo.params["photo"]["content"]
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    height, width, _ = imread(BytesIO(png)).shape  # a real picture, not just a header
    assert width == 840 and height > 200
    assert photo.params["reply_parameters"]["message_id"] == shown["message_id"]
    assert "0-100%" in parse_html(photo.params["caption"])
    kinds = await eventually(
        lambda: _kinds_of(repo, 58, "chart"),
    )
    assert kinds == ["chart"]


async def _kinds_of(repo, user_id: int, kind: str) -> list[str]:
    return [row.kind for row in await repo.interactions.all() if row.user_id == user_id and row.kind == kind]


async def test_the_ready_sentences_under_the_guide_answer_with_one_tap(
    fake: FakeTelegram, repo, bert_engine: FillMaskEngine
) -> None:
    ann = fake.user(59)
    await fake.send_text(ann, "MLM")
    await fake.wait_for(
        lambda f: any(c.params.get("reply_markup", {}).get("inline_keyboard", [[{}]])[0][0].get("callback_data")
                      == "try:0" for c in f.sent("sendMessage", 59))
    )  # fmt: skip
    offer = next(c for c in fake.sent("sendMessage", 59) if "Try it yourself" in parse_html(c.params["text"]))
    buttons = [row[0] for row in offer.params["reply_markup"]["inline_keyboard"]]
    assert [b["callback_data"] for b in buttons] == ["try:0", "try:1", "try:2", "quiz"]
    assert "I went to the [MASK] to buy bread." in buttons[0]["text"]
    shown = _bot_messages(fake, 59)[-1]
    before = len(fake.sent("sendMessage", 59))
    await fake.press(ann, shown, "try:1")
    await fake.wait_for(lambda f: len(f.sent("sendMessage", 59)) > before)
    answer = fake.sent("sendMessage", 59)[-1]
    visible = parse_html(answer.params["text"])
    expected = bert_engine.fill("I went to the [MASK] to swim.", top_k=5, words_only=True).masks[0]
    assert "I went to the [MASK] to swim." in visible and all(p.token_str in visible for p in expected)
    rows = [[b["callback_data"] for b in row] for row in answer.params["reply_markup"]["inline_keyboard"]]
    assert rows == [["more:x1", "chart:x1"], ["compare:x1", "guide"]]
    # Its "More candidates" knows the sentence from the button, not from a message of the person's.
    answered = _bot_messages(fake, 59)[-1]
    await fake.press(ann, answered, "more:x1")
    (edit,) = await replies(fake, 59, method="editMessageText")
    more = bert_engine.fill("I went to the [MASK] to swim.", top_k=15, words_only=True).masks[0]
    assert all(p.token_str in parse_html(edit.params["text"]) for p in more)
    assert edit.params["reply_markup"]["inline_keyboard"][0][0]["callback_data"] == "fewer:x1"
    logged = await eventually(lambda: _kinds_of(repo, 59, "prediction"))
    assert logged


async def test_a_sentence_without_a_mask_offers_its_words_and_a_tap_hides_one(
    fake: FakeTelegram, repo, bert_engine: FillMaskEngine
) -> None:
    ann = fake.user(60)
    sentence = "The Eiffel Tower is in Paris, isn't it?"
    await fake.send_text(ann, sentence)
    (offer,) = await replies(fake, 60)
    assert "[MASK]" in parse_html(offer.params["text"])
    buttons = [b for row in offer.params["reply_markup"]["inline_keyboard"] for b in row]
    assert [b["text"] for b in buttons] == ["The", "Eiffel", "Tower", "is", "in", "Paris", "isn't", "it"]
    shown = _bot_messages(fake, 60)[-1]
    await fake.press(ann, shown, buttons[5]["callback_data"])
    await fake.wait_for(lambda f: len(f.sent("sendMessage", 60)) >= 2)
    result = parse_html(fake.sent("sendMessage", 60)[-1].params["text"])
    masked = "The Eiffel Tower is in [MASK], isn't it?"
    assert f"I hid Paris: {masked}" in result
    guesses = [p.token_str for p in bert_engine.fill(masked, top_k=50, words_only=True).masks[0]]
    model = bert_dir_label(bert_engine)
    if "paris" in guesses:
        rank = guesses.index("paris") + 1
        assert (f"at rank {rank}" in result) if rank > 1 else ("guessed it first" in result)
    else:
        assert f"It was Paris; {model} guessed {guesses[0]}, and Paris is not in its top 50" in result
    rows = await eventually(lambda: _kinds_of(repo, 60, "prediction"))
    assert rows


def bert_dir_label(engine: FillMaskEngine) -> str:
    return str(engine.name).rstrip("/").rsplit("/", 1)[-1]


@pytest.mark.parametrize("words", [12, 30])
async def test_tap_buttons_fit_telegram_for_any_sentence(fake: FakeTelegram, repo, words: int) -> None:
    """At most 12 buttons, data within 64 bytes whatever the words; a tap after a restart is an expired button."""
    long_words = " ".join(f"{'w' * 5}{n}" for n in range(words))
    await fake.send_text(fake.user(61), long_words)
    (offer,) = await replies(fake, 61)
    buttons = [b for row in offer.params["reply_markup"]["inline_keyboard"] for b in row]
    assert len(buttons) == 12 and all(len(b["callback_data"].encode()) <= 64 for b in buttons)
    shown = _bot_messages(fake, 61)[-1]
    # A button from before a restart: its key is one this process never handed out.
    shown["reply_markup"]["inline_keyboard"][0][3]["callback_data"] = "tap:unknownkey:3"
    await fake.press(fake.user(61), shown, "tap:unknownkey:3")
    await fake.wait_for(lambda f: len(f.sent("sendMessage", 61)) >= 2)
    assert fake.sent("answerCallbackQuery")
    assert "can't find the sentence" in parse_html(fake.sent("sendMessage", 61)[-1].params["text"])


async def test_the_quiz_asks_five_polls_one_at_a_time_and_gives_the_score(fake: FakeTelegram, repo, settings) -> None:
    from bot.render import Renderer

    questions = Renderer().quiz()
    ann = fake.user(62)
    await fake.send_text(ann, "/quiz")
    picks = [q["correct"] for q in questions]
    picks[1] = (picks[1] + 1) % len(questions[1]["options"])  # one wrong answer
    for number, question in enumerate(questions):
        await fake.wait_for(lambda f, n=number: len(f.sent("sendPoll", 62)) > n)
        poll = fake.sent("sendPoll", 62)[number]
        assert poll.params["question"] == question["question"] and poll.params["type"] == "quiz"
        assert str(poll.params["is_anonymous"]).lower() == "false"  # or Telegram would not send poll_answer
        assert poll.params["correct_option_ids"] == [question["correct"]]
        sent = [m for m in fake._messages.values() if m["chat"]["id"] == 62 and "poll" in m][-1]
        await fake.answer_poll(ann, sent["poll"]["id"], [picks[number]])
    await fake.wait_for(lambda f: any("of 5" in parse_html(c.params["text"]) for c in f.sent("sendMessage", 62)))
    score = parse_html(fake.sent("sendMessage", 62)[-1].params["text"])
    assert "4 of 5" in score
    assert len(fake.sent("sendPoll", 62)) == 5
    outcomes = await eventually(lambda: _quiz_outcomes(repo, 62))
    assert outcomes == ["right", "wrong", "right", "right", "right"]


async def _quiz_outcomes(repo, user_id: int) -> list[str]:
    rows = [row for row in await repo.interactions.all() if row.user_id == user_id and row.kind == "quiz"]
    return [row.outcome for row in sorted(rows, key=lambda row: row.id)] if len(rows) == 5 else []


async def test_the_test_yourself_button_under_the_guide_starts_the_quiz(fake: FakeTelegram, repo) -> None:
    ann = fake.user(63)
    await fake.send_text(ann, "MLM")
    await fake.wait_for(
        lambda f: any("Try it yourself" in parse_html(c.params["text"]) for c in f.sent("sendMessage", 63))
    )
    offer = next(c for c in fake.sent("sendMessage", 63) if "Try it yourself" in parse_html(c.params["text"]))
    assert offer.params["reply_markup"]["inline_keyboard"][-1][0]["callback_data"] == "quiz"
    shown = _bot_messages(fake, 63)[-1]
    await fake.press(ann, shown, "quiz")
    await fake.wait_for(lambda f: bool(f.sent("sendPoll", 63)))
    # An answer to a poll this run never sent (one from before a restart) gets a line saying so, nothing more.
    await fake.answer_poll(fake.user(64), "poll-from-before-a-restart", [0])
    await fake.wait_for(lambda f: said(f, 64, "/quiz to start a new one"))
    await fake.settle()
    assert len(fake.sent("sendPoll", 63)) == 1 and not fake.sent("sendPoll", 64)


async def test_quiz_in_a_group_points_to_the_private_chat(fake: FakeTelegram, repo) -> None:
    await fake.send_text(fake.user(65), "/quiz", chat=GROUP)
    (pointer,) = await replies(fake, GROUP["id"])
    assert "private chat" in parse_html(pointer.params["text"])
    assert not fake.sent("sendPoll")


async def test_compare_shows_four_architectures_side_by_side(
    fake: FakeTelegram, model_dirs: dict[str, Path], tmp_path: Path
) -> None:
    """/compare and the button under a prediction: each model's top 3, named as people know them, each with its
    own mask token; the models load on first use."""
    order = ["bert", "roberta", "distilbert", "albert"]
    settings = bot_settings(
        fake, model_dirs["bert"], tmp_path, compare_models=",".join(str(model_dirs[k]) for k in order)
    )
    engines = {k: FillMaskEngine.load(str(model_dirs[k]), device="cpu", dtype="float32") for k in order}
    sentence = "The cat sat on the [MASK]."
    async with running_bot(settings, fake) as repo:
        ann = fake.user(66)
        await fake.send_text(ann, f"/compare {sentence}")
        await fake.wait_for(
            lambda f: any("one sentence" in parse_html(c.params["text"]) for c in f.sent("sendMessage", 66))
        )
        texts_sent = [parse_html(c.params["text"]) for c in fake.sent("sendMessage", 66)]
        assert "first time" in texts_sent[0]  # said before the first load
        table = texts_sent[-1]
        for kind, label in zip(order, ["BERT", "RoBERTa", "DistilBERT", "ALBERT"], strict=True):
            engine = engines[kind]
            top3 = engine.fill(sentence, top_k=3, words_only=True).masks[0]
            section = table.split(f"{label} (its mask: {engine.mask_token})", 1)[1]
            for p in top3:
                assert f"{p.token_str.strip()} {p.score * 100:.1f}%" in section.split("\n\n")[0] + section
        # The button under a prediction answers the same way (models already loaded: no "first time" now).
        await fake.send_text(ann, sentence)
        await fake.wait_for(
            lambda f: any("Best guess" in parse_html(c.params["text"]) for c in f.sent("sendMessage", 66))
        )
        shown = _bot_messages(fake, 66)[-1]
        before = len(fake.sent("sendMessage", 66))
        await fake.press(ann, shown, "compare")
        await fake.wait_for(lambda f: len(f.sent("sendMessage", 66)) > before)
        assert "one sentence" in parse_html(fake.sent("sendMessage", 66)[-1].params["text"])

        async def both_logged() -> bool:
            return len(await _kinds_of(repo, 66, "compare")) == 2

        assert await eventually(both_logged)


async def test_compare_names_a_model_that_cannot_load_and_answers_with_the_others(
    fake: FakeTelegram, bert_dir: Path, tmp_path: Path
) -> None:
    settings = bot_settings(fake, bert_dir, tmp_path, compare_models=f"{bert_dir},{tmp_path}/no-such-model")
    async with running_bot(settings, fake):
        await fake.send_text(fake.user(67), "/compare The cat sat on the [MASK].")
        await fake.wait_for(
            lambda f: any("one sentence" in parse_html(c.params["text"]) for c in f.sent("sendMessage", 67))
        )
        table = parse_html(fake.sent("sendMessage", 67)[-1].params["text"])
        assert "BERT (its mask: [MASK])" in table and "no-such-model" in table
        assert "⚠️ could not be loaded" in table
        # A sentence one model refuses: its own words, with the numbers in them.
        masks = " ".join(["[MASK]"] * 6)
        await fake.send_text(fake.user(67), f"/compare {masks}")
        await fake.wait_for(lambda f: said(f, 67, "6 masks"))
        assert "None" not in parse_html(fake.sent("sendMessage", 67)[-1].params["text"])
        await fake.send_text(fake.user(67), "/compare no mask here")
        await fake.wait_for(
            lambda f: any("/compare The cat" in parse_html(c.params["text"]) for c in f.sent("sendMessage", 67))
        )


def said(fake: FakeTelegram, chat_id: int, phrase: str) -> bool:
    return any(phrase in parse_html(c.params["text"]) for c in fake.sent("sendMessage", chat_id))


async def test_buttons_find_their_sentence_without_reply_to_message_even_after_a_restart(
    fake: FakeTelegram, settings
) -> None:
    """Telegram may leave ``reply_to_message`` out of a press (an answer older than 48 hours, a reply to the latest
    message): the buttons find the sentence by the answer's own chat and message id, logged with the answer,
    in this run and the next."""
    ava = fake.user(731)
    async with running_bot(settings, fake) as repo:
        await fake.send_text(ava, "Paris is the [MASK] of France.")
        await replies(fake, 731)
        answer = dict(_bot_messages(fake, 731)[-1])
        answer.pop("reply_to_message")
        await eventually(lambda: _kinds_of(repo, 731, "prediction"))  # the answer is in the log
        await fake.press(ava, answer, "chart")
        await fake.wait_for(lambda f: bool(f.sent("sendPhoto", 731)), timeout=30)
    async with running_bot(settings, fake):  # another process: nothing of the last one in memory
        await fake.press(ava, answer, "more")
        await fake.wait_for(lambda f: bool(f.sent("editMessageText", 731)), timeout=30)
    edited = parse_html(fake.sent("editMessageText", 731)[0].params["text"])
    assert "Paris is the" in edited and not any(
        "can't find the sentence" in parse_html(c.params["text"]) for c in fake.sent("sendMessage", 731)
    )
