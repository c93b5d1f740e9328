"""Telegram's clocks, against the fake Bot API with a model the test can hold back: a button press is answered
before the model works, inline queries are answered in time or replaced by the user's newer query."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from bot.handlers import inline
from bot.runner import serve
from tests.support.bot_harness import bot_settings, running_bot
from tests.support.fake_telegram import FakeTelegram, parse_html
from tests.support.held_model import HeldModel


@pytest.fixture
async def bot(fake: FakeTelegram, bert_dir: Path, tmp_path: Path):
    settings = bot_settings(fake, bert_dir, tmp_path)
    model = HeldModel(settings)
    async with running_bot(settings, fake, model=model):
        yield model


async def test_a_button_press_is_answered_before_the_model_works(fake: FakeTelegram, bot: HeldModel) -> None:
    ann = fake.user(90)
    await fake.send_text(ann, "the slow cat sat on the [MASK] .")
    bot.gate.set()
    await fake.wait_for(lambda f: len(f.sent("sendMessage", 90)) >= 1)
    answer = next(m for m in reversed(list(fake._messages.values())) if m["chat"]["id"] == 90)
    bot.gate.clear()  # the model is busy from now on
    await fake.press(ann, answer, "more")
    await fake.wait_for(lambda f: bool(f.sent("answerCallbackQuery")))
    assert not fake.sent("editMessageText"), "the spinner stops while the model is still working"
    bot.gate.set()
    await fake.wait_for(lambda f: bool(f.sent("editMessageText")))
    assert len(fake.sent("answerCallbackQuery")) == 1


async def test_a_newer_inline_query_replaces_the_older_one(fake: FakeTelegram, bot: HeldModel) -> None:
    bob = fake.user(91)
    await fake.inline(bob, "the slow [MASK]")
    await asyncio.sleep(0.3)
    newer = await fake.inline(bob, "the cat sat on the [MASK] .")
    await fake.wait_for(lambda f: bool(f.sent("answerInlineQuery")))
    await fake.settle(0.5)
    (answer,) = fake.sent("answerInlineQuery")
    assert answer.params["inline_query_id"] == newer and len(answer.params["results"]) == 6
    assert bot.cancelled == ["the slow [MASK]"], "the older query's model call is cancelled, not left running"


async def test_an_inline_answer_comes_in_time_or_says_busy(
    fake: FakeTelegram, bot: HeldModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(inline, "INLINE_DEADLINE_S", 0.5)
    query = await fake.inline(fake.user(92), "a slow [MASK]")
    await fake.wait_for(lambda f: bool(f.sent("answerInlineQuery")))
    (answer,) = fake.sent("answerInlineQuery")
    assert answer.params["inline_query_id"] == query and answer.params["results"] == []
    assert "busy" in answer.params["button"]["text"]


async def test_a_stop_does_not_wait_past_its_budget_for_a_stuck_handler(bert_dir: Path, tmp_path: Path) -> None:
    """The model never answers one sentence: a stop still ends within SHUTDOWN_BUDGET_S, the update stays in
    the inbox, and the next start answers it."""
    fake = FakeTelegram()
    async with fake.running():
        settings = bot_settings(fake, bert_dir, tmp_path, shutdown_budget_s=3)
        stuck = HeldModel(settings)
        stop = asyncio.Event()
        task = asyncio.create_task(serve(settings, stop, model=stuck))
        await fake.wait_for(lambda f: bool(f.sent("deleteWebhook")), timeout=60)
        await fake.send_text(fake.user(93), "the slow cat sat on the [MASK] .")
        await asyncio.sleep(1.0)  # the handler is waiting for the model now
        loop = asyncio.get_running_loop()
        stopped = loop.time()
        stop.set()
        await asyncio.wait_for(task, 30)
        assert loop.time() - stopped < 3 + 2, "the stop waited past its budget"
        assert not fake.sent("sendMessage", 93)

        async with running_bot(settings, fake):  # the next start, with a model that answers
            await fake.wait_for(lambda f: bool(f.sent("sendMessage", 93)), timeout=30)
        assert "Best guess" in parse_html(fake.sent("sendMessage", 93)[0].params["text"])
