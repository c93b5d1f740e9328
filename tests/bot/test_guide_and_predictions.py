"""The guide and predictions, end to end: ``bot.runner.serve`` (what ``mlm-bot run`` runs) with the real
python-telegram-bot Application, a real SQLite file and a tiny real model, against the fake Bot API server."""

from __future__ import annotations

from pathlib import Path

import pytest

from models.engine.core import FillMaskEngine
from tests.support.bot_harness import eventually
from tests.support.chats import (
    GROUP,
    can_dm,
    guide_document,
    guide_received,
    lesson_started,
    logged_rows,
    replies,
)
from tests.support.fake_telegram import BOT_USERNAME, FakeTelegram, parse_html

pytestmark = pytest.mark.usefixtures("no_token_in_logs")


# ---------------------------------------------------------------- start, help, guide


async def test_start_greets_registers_commands_and_allows_dms(fake: FakeTelegram, live_bot_repo) -> None:
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
        "subscribe",
        "help",
        "forget",
    ]
    assert await eventually(lambda: can_dm(live_bot_repo, 42))


@pytest.mark.parametrize("text", ["MLM", "mlm?", "#MLM", "send me MLM please", "Ｍｌｍ", "M\u200bLM!"])
async def test_keyword_in_a_dm_sends_the_guide_and_the_document(fake: FakeTelegram, live_bot_repo, text: str) -> None:
    ann = fake.user(43)
    await fake.send_text(ann, text)
    guide = await guide_received(fake, 43)
    for part in (
        "What is a masked language model",
        "The [MASK] sat on the mat",
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
    assert not fake.sent("sendDocument", 43), "the .md copy comes on its button, not by default"
    document = await guide_document(fake, 43)
    assert document["filename"] == "mlm-guide.md"
    markdown = document["content"].decode()
    assert markdown.startswith("# 🧠") and "[BERT](https://huggingface.co/google-bert/bert-base-uncased)" in markdown
    logged = await logged_rows(live_bot_repo, "guide")
    assert logged and logged[0].trigger == "MLM"


@pytest.mark.parametrize("text", ["html", "xmlm", "mlmodel", "I like HTML5"])
async def test_words_that_merely_contain_the_letters_get_the_hint_not_the_guide(
    fake: FakeTelegram, live_bot_repo, text: str
) -> None:
    await fake.send_text(fake.user(44), text)
    (hint,) = await replies(fake, 44)
    assert "[MASK]" in parse_html(hint.params["text"])
    await fake.settle()
    assert not lesson_started(fake, 44)


@pytest.mark.parametrize("payload", ["mlm", "inline", f"p{GROUP['id']}_77"])
async def test_every_payload_the_bot_hands_out_sends_the_guide(fake: FakeTelegram, live_bot_repo, payload: str) -> None:
    await fake.send_text(fake.user(45), f"/start {payload}")
    assert "Learn more" in await guide_received(fake, 45)
    assert (await live_bot_repo.users.get(45)).can_dm


@pytest.mark.parametrize("payload", ["<script>", "x" * 65, "p123_abc", "nonsense"])
async def test_unknown_or_crafted_payloads_get_the_greeting(fake: FakeTelegram, live_bot_repo, payload: str) -> None:
    await fake.send_text(fake.user(46), f"/start {payload}")
    (greeting,) = await replies(fake, 46)
    assert "I teach" in parse_html(greeting.params["text"])


async def test_help_and_guide_commands(fake: FakeTelegram, live_bot_repo) -> None:
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
    fake: FakeTelegram, live_bot_repo, bert_engine: FillMaskEngine
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

    first = (await logged_rows(live_bot_repo, "prediction"))[0]
    assert first.input_text == sentence and first.user_id == 50 and first.chat_type == "private"
    assert [row["token"] for row in first.predictions[0]] == [p.token_str for p in expected]
    assert first.latency_ms > 0 and first.model_name == str(Path(first.model_name))


async def test_several_masks_show_each_list_and_the_best_sentence(
    fake: FakeTelegram, live_bot_repo, bert_engine: FillMaskEngine
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


async def test_predict_command(fake: FakeTelegram, live_bot_repo) -> None:
    carol = fake.user(52)
    await fake.send_text(carol, "/predict")
    (usage,) = await replies(fake, 52)
    assert "/predict The cat sat on the [MASK]." in parse_html(usage.params["text"])
    await fake.send_text(carol, "/predict The dog ran to the [MASK].")
    answer = (await replies(fake, 52, 2))[1]
    assert "The dog ran to the [MASK]." in parse_html(answer.params["text"])
