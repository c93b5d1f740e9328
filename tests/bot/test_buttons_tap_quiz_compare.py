"""The buttons under answers, tap-to-mask, the quiz and /compare, end to end (real bot, fake Bot API)."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

from bot.text.render import percent
from models.engine.core import FillMaskEngine
from models.engine.errors import TargetNotSingleTokenError
from models.serving.client import LocalFillMask
from tests.support.bot_harness import bot_settings, eventually, running_bot
from tests.support.chats import (
    GROUP,
    bot_messages,
    has_said,
    kinds_of,
    lesson_started,
    replies,
)
from tests.support.fake_telegram import BOT_USERNAME, FakeTelegram, parse_html

pytestmark = pytest.mark.usefixtures("no_token_in_logs")


# ----------------------------------------------------------------------- buttons: one answer each


async def test_unknown_or_old_button_data_is_answered_once(fake: FakeTelegram, live_bot_repo) -> None:
    lee = fake.user(95)
    await fake.send_text(lee, "/start")
    await replies(fake, 95)
    await fake.press(lee, bot_messages(fake, 95)[-1], "v1:some-old-button")
    await fake.wait_for(lambda f: bool(f.sent("answerCallbackQuery")))
    await fake.settle(0.3)
    (answer,) = fake.sent("answerCallbackQuery")
    assert "no longer works" in answer.params["text"]


async def test_pressing_more_twice_makes_no_edit_telegram_would_refuse(fake: FakeTelegram, live_bot_repo) -> None:
    mo = fake.user(96)
    await fake.send_text(mo, "The cat sat on the [MASK].")
    await replies(fake, 96)
    shown = bot_messages(fake, 96)[-1]
    await fake.press(mo, shown, "more")
    await replies(fake, 96, 1, "editMessageText")
    await fake.press(mo, fake.stored(96, shown["message_id"]), "more")  # the same answer again
    await fake.wait_for(lambda f: len(f.sent("answerCallbackQuery")) >= 2)
    await fake.settle(0.5)
    assert len(fake.sent("editMessageText")) == 1 and len(fake.sent("answerCallbackQuery")) == 2


async def test_more_pressed_again_before_its_edit_went_out_edits_once(fake: FakeTelegram, live_bot_repo) -> None:
    """A second press that carries the answer as it was before the first press's edit (tapped twice quickly; in
    a paced chat the first edit can wait a second) computes the same new text: no second edit goes to Telegram,
    which would refuse it ("message is not modified")."""
    ivy = fake.user(97)
    await fake.send_text(ivy, "The cat sat on the [MASK].")
    await replies(fake, 97)
    shown = bot_messages(fake, 97)[-1]
    as_tapped = copy.deepcopy(shown)
    await fake.press(ivy, shown, "more")
    await replies(fake, 97, 1, "editMessageText")
    await fake.press(ivy, as_tapped, "more")
    await fake.wait_for(lambda f: len(f.sent("answerCallbackQuery")) >= 2)
    await fake.settle(0.5)
    assert len(fake.sent("editMessageText")) == 1 and fake.rejections == []
    assert "fewer" in str(fake.stored(97, shown["message_id"])["reply_markup"])


async def test_the_guide_button_in_a_group_opens_the_bot_instead_of_posting_the_guide(
    fake: FakeTelegram, live_bot_repo
) -> None:
    oz = fake.user(98)
    await fake.send_text(oz, "/help", chat=GROUP)  # the bot's answer in the group carries the guide button
    await replies(fake, GROUP["id"])
    (shared,) = bot_messages(fake, GROUP["id"])
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
        await fake.press(pat, bot_messages(fake, 99)[-1], "more")
        await replies(fake, 99, 2)  # the polite "something went wrong"
        await fake.settle(0.5)
    assert len(fake.sent("answerCallbackQuery")) == 1


async def test_the_chart_button_sends_a_picture_of_the_candidates(
    fake: FakeTelegram, live_bot_repo, bert_engine: FillMaskEngine
) -> None:
    from io import BytesIO

    from matplotlib.image import imread

    ann = fake.user(58)
    sentence = "The [MASK] costs $5 🙂"
    await fake.send_text(ann, sentence)
    await replies(fake, 58)
    shown = bot_messages(fake, 58)[-1]
    await fake.press(ann, shown, "chart")
    (photo,) = await replies(fake, 58, method="sendPhoto")
    png = photo.params["photo"]["content"]
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    height, width, _ = imread(BytesIO(png)).shape  # a real picture, not just a header
    assert width == 840 and height > 200
    assert photo.params["reply_parameters"]["message_id"] == shown["message_id"]
    assert "0-100%" in parse_html(photo.params["caption"])
    kinds = await eventually(
        lambda: kinds_of(live_bot_repo, 58, "chart"),
    )
    assert kinds == ["chart"]


async def test_the_ready_sentences_under_the_guide_answer_with_one_tap(
    fake: FakeTelegram, live_bot_repo, bert_engine: FillMaskEngine
) -> None:
    ann = fake.user(59)
    await fake.send_text(ann, "MLM")
    await fake.wait_for(lambda f: lesson_started(f, 59))
    await fake.press(ann, bot_messages(fake, 59)[-1], "guide:mlm:live")  # the lesson's "Try it live"
    await fake.wait_for(
        lambda f: any(c.params.get("reply_markup", {}).get("inline_keyboard", [[{}]])[0][0].get("callback_data")
                      == "try:0" for c in f.sent("sendMessage", 59))
    )  # fmt: skip
    offer = next(c for c in fake.sent("sendMessage", 59) if "Try it yourself" in parse_html(c.params["text"]))
    buttons = [row[0] for row in offer.params["reply_markup"]["inline_keyboard"]]
    assert [b["callback_data"] for b in buttons] == [f"try:{n}" for n in range(6)] + ["quiz"]
    assert "I went to the [MASK] to buy bread." in buttons[0]["text"]
    shown = bot_messages(fake, 59)[-1]
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
    answered = bot_messages(fake, 59)[-1]
    await fake.press(ann, answered, "more:x1")
    (edit,) = await replies(fake, 59, method="editMessageText")
    more = bert_engine.fill("I went to the [MASK] to swim.", top_k=15, words_only=True).masks[0]
    assert all(p.token_str in parse_html(edit.params["text"]) for p in more)
    assert edit.params["reply_markup"]["inline_keyboard"][0][0]["callback_data"] == "fewer:x1"
    logged = await eventually(lambda: kinds_of(live_bot_repo, 59, "prediction"))
    assert logged


async def test_a_sentence_without_a_mask_offers_its_words_and_a_tap_hides_one(
    fake: FakeTelegram, live_bot_repo, bert_engine: FillMaskEngine
) -> None:
    ann = fake.user(60)
    sentence = "The Eiffel Tower is in Paris, isn't it?"
    await fake.send_text(ann, sentence)
    (offer,) = await replies(fake, 60)
    assert "[MASK]" in parse_html(offer.params["text"])
    buttons = [b for row in offer.params["reply_markup"]["inline_keyboard"] for b in row]
    assert [b["text"] for b in buttons] == ["The", "Eiffel", "Tower", "is", "in", "Paris", "isn't", "it"]
    shown = bot_messages(fake, 60)[-1]
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
        score = bert_engine.fill(masked, top_k=1, targets=["Paris"]).masks[0][0].score
        assert f"It gave Paris {percent(score)}." in result and "pieces" not in result
    rows = await eventually(lambda: kinds_of(live_bot_repo, 60, "prediction"))
    assert rows
    # A word the model's vocabulary splits ("eiffel" is not one token of the tiny model's): that is why it missed.
    with pytest.raises(TargetNotSingleTokenError):
        bert_engine.fill("The [MASK] Tower", targets=["Eiffel"])
    await fake.press(ann, shown, buttons[1]["callback_data"])
    await fake.wait_for(lambda f: len(f.sent("sendMessage", 60)) >= 3)
    result = parse_html(fake.sent("sendMessage", 60)[-1].params["text"])
    assert "splits Eiffel into several pieces" in result and "It gave" not in result


def bert_dir_label(engine: FillMaskEngine) -> str:
    return str(engine.name).rstrip("/").rsplit("/", 1)[-1]


@pytest.mark.parametrize("words", [12, 30])
async def test_tap_buttons_fit_telegram_for_any_sentence(fake: FakeTelegram, live_bot_repo, words: int) -> None:
    """At most 12 buttons, data within 64 bytes whatever the words; a tap after a restart is an expired button."""
    long_words = " ".join(f"{'w' * 5}{n}" for n in range(words))
    await fake.send_text(fake.user(61), long_words)
    (offer,) = await replies(fake, 61)
    buttons = [b for row in offer.params["reply_markup"]["inline_keyboard"] for b in row]
    assert len(buttons) == 12 and all(len(b["callback_data"].encode()) <= 64 for b in buttons)
    shown = bot_messages(fake, 61)[-1]
    # A button from before a restart: its key is one this process never handed out.
    shown["reply_markup"]["inline_keyboard"][0][3]["callback_data"] = "tap:unknownkey:3"
    await fake.press(fake.user(61), shown, "tap:unknownkey:3")
    await fake.wait_for(lambda f: len(f.sent("sendMessage", 61)) >= 2)
    assert fake.sent("answerCallbackQuery")
    assert "can't find the sentence" in parse_html(fake.sent("sendMessage", 61)[-1].params["text"])


async def test_the_quiz_asks_its_polls_one_at_a_time_and_gives_the_score(
    fake: FakeTelegram, live_bot_repo, settings, bert_engine: FillMaskEngine
) -> None:
    """Every question as a quiz poll with the right answer marked; the last one is answered by the live model: its
    options are the model's top words, the right one its first guess, and the explanation lists its guesses."""
    from bot.text.render import Renderer

    questions = Renderer().quiz()
    live = questions[-1]
    guesses = bert_engine.fill(live["live"], top_k=4, words_only=True).masks[0]
    live_options = sorted({p.token_str.strip() for p in guesses})
    expected = [(q["options"], q["correct"]) for q in questions[:-1]]
    expected.append((live_options, live_options.index(guesses[0].token_str.strip())))
    ann = fake.user(62)
    await fake.send_text(ann, "/quiz")
    picks = [correct for _, correct in expected]
    picks[1] = (picks[1] + 1) % len(expected[1][0])  # one wrong answer
    for number, question in enumerate(questions):
        await fake.wait_for(lambda f, n=number: len(f.sent("sendPoll", 62)) > n)
        poll = fake.sent("sendPoll", 62)[number]
        assert poll.params["question"] == question["question"] and poll.params["type"] == "quiz"
        assert str(poll.params["is_anonymous"]).lower() == "false"  # or Telegram would not send poll_answer
        assert [o["text"] for o in poll.params["options"]] == expected[number][0]
        assert poll.params["correct_option_ids"] == [expected[number][1]]
        sent = [m for m in fake._messages.values() if m["chat"]["id"] == 62 and "poll" in m][-1]
        await fake.answer_poll(ann, sent["poll"]["id"], [picks[number]])
    assert f"{guesses[0].token_str.strip()} {percent(guesses[0].score)}" in poll.params["explanation"]
    total = len(questions)
    await fake.wait_for(lambda f: any(f"of {total}" in parse_html(c.params["text"]) for c in f.sent("sendMessage", 62)))
    score = parse_html(fake.sent("sendMessage", 62)[-1].params["text"])
    assert f"{total - 1} of {total}" in score
    assert len(fake.sent("sendPoll", 62)) == total
    outcomes = await eventually(lambda: _quiz_outcomes(live_bot_repo, 62, total))
    assert outcomes == ["right", "wrong"] + ["right"] * (total - 2)


async def _quiz_outcomes(live_bot_repo, user_id: int, total: int) -> list[str]:
    rows = [row for row in await live_bot_repo.interactions.all() if row.user_id == user_id and row.kind == "quiz"]
    return [row.outcome for row in sorted(rows, key=lambda row: row.id)] if len(rows) == total else []


async def test_the_test_yourself_button_under_the_guide_starts_the_quiz(fake: FakeTelegram, live_bot_repo) -> None:
    ann = fake.user(63)
    await fake.send_text(ann, "MLM")
    await fake.wait_for(lambda f: lesson_started(f, 63))
    await fake.press(ann, bot_messages(fake, 63)[-1], "guide:mlm:live")  # the lesson's "Try it live"
    await fake.wait_for(
        lambda f: any("Try it yourself" in parse_html(c.params["text"]) for c in f.sent("sendMessage", 63))
    )
    offer = next(c for c in fake.sent("sendMessage", 63) if "Try it yourself" in parse_html(c.params["text"]))
    assert offer.params["reply_markup"]["inline_keyboard"][-1][0]["callback_data"] == "quiz"
    shown = bot_messages(fake, 63)[-1]
    await fake.press(ann, shown, "quiz")
    await fake.wait_for(lambda f: bool(f.sent("sendPoll", 63)))
    # An answer to a poll this run never sent (one from before a restart) gets a line saying so, nothing more.
    await fake.answer_poll(fake.user(64), "poll-from-before-a-restart", [0])
    await fake.wait_for(lambda f: has_said(f, 64, "/quiz to start a new one"))
    await fake.settle()
    assert len(fake.sent("sendPoll", 63)) == 1 and not fake.sent("sendPoll", 64)


async def test_quiz_in_a_group_points_to_the_private_chat(fake: FakeTelegram, live_bot_repo) -> None:
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
    async with running_bot(settings, fake) as live_bot_repo:
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
        shown = bot_messages(fake, 66)[-1]
        before = len(fake.sent("sendMessage", 66))
        await fake.press(ann, shown, "compare")
        await fake.wait_for(lambda f: len(f.sent("sendMessage", 66)) > before)
        assert "one sentence" in parse_html(fake.sent("sendMessage", 66)[-1].params["text"])

        async def both_logged() -> bool:
            return len(await kinds_of(live_bot_repo, 66, "compare")) == 2

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
        await fake.wait_for(lambda f: has_said(f, 67, "6 masks"))
        assert "None" not in parse_html(fake.sent("sendMessage", 67)[-1].params["text"])
        await fake.send_text(fake.user(67), "/compare no mask here")
        await fake.wait_for(
            lambda f: any("/compare The cat" in parse_html(c.params["text"]) for c in f.sent("sendMessage", 67))
        )


async def test_buttons_find_their_sentence_without_reply_to_message_even_after_a_restart(
    fake: FakeTelegram, settings
) -> None:
    """Telegram may leave ``reply_to_message`` out of a press (an answer older than 48 hours, a reply to the latest
    message): the buttons find the sentence by the answer's own chat and message id, logged with the answer,
    in this run and the next."""
    ava = fake.user(731)
    async with running_bot(settings, fake) as live_bot_repo:
        await fake.send_text(ava, "Paris is the [MASK] of France.")
        await replies(fake, 731)
        answer = dict(bot_messages(fake, 731)[-1])
        answer.pop("reply_to_message")
        await eventually(lambda: kinds_of(live_bot_repo, 731, "prediction"))  # the answer is in the log
        await fake.press(ava, answer, "chart")
        await fake.wait_for(lambda f: bool(f.sent("sendPhoto", 731)), timeout=30)
    async with running_bot(settings, fake):  # another process: nothing of the last one in memory
        await fake.press(ava, answer, "more")
        await fake.wait_for(lambda f: bool(f.sent("editMessageText", 731)), timeout=30)
    edited = parse_html(fake.sent("editMessageText", 731)[0].params["text"])
    assert "Paris is the" in edited and not any(
        "can't find the sentence" in parse_html(c.params["text"]) for c in fake.sent("sendMessage", 731)
    )
