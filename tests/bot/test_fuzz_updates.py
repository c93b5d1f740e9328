"""Property-based: generated updates of every kind never reach the error handler, every button press is answered
exactly once, and every private message with a mask or the keyword gets a reply.

The real bot (``bot.runner.serve``) runs against the fake Bot API in an event loop of its own thread for the
whole module; hypothesis generates batches of updates (text, captions, edits, callback queries with random
data on random or inaccessible messages, inline queries, group messages) and the test pushes them and checks
the invariants once the bot has gone quiet.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bot.handlers.failures import log as error_log
from bot.runner import serve
from tests.support.bot_harness import bot_settings
from tests.support.fake_telegram import BOT_ID, FakeTelegram

GROUP = {"id": -1001555000999, "type": "supergroup", "title": "Fuzz group"}
WORDS = ["the", "cat", "[MASK]", "<mask>", "[mask]", "MLM", "mlm", "#MLM", "🙂", "<b>", "&amp;", "/predict", "/guide",
         "/start", "/forget", "/stats", "/help", "\u200b", "x" * 50, "[MASK]" * 3, "*", "_", "`"]  # fmt: skip
DATA = ["more", "fewer", "guide", "forget:yes", "forget:no", "v0:old", "", "x" * 64, "more:1", "🙂"]


class Bot:
    """The bot and the fake Bot API, alive in a background event loop for the whole module."""

    def __init__(self, bert_dir: Path, tmp_path: Path) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.fake = FakeTelegram()
        self.stop = asyncio.Event()
        self._server = self.run(self._start(bert_dir, tmp_path))

    def run(self, coro: Any, timeout: float = 120) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    async def _start(self, bert_dir: Path, tmp_path: Path) -> None:
        self.stop = asyncio.Event()
        self._running = self.fake.running()
        await self._running.__aenter__()
        # Generous limits: this test is about odd input, not floods (tests/bot/test_fairness.py is).
        settings = bot_settings(
            self.fake,
            bert_dir,
            tmp_path,
            predictions_per_minute=10_000,
            actions_per_minute=10_000,
            actions_in_flight=1000,
        )
        self.task = asyncio.create_task(serve(settings, self.stop))
        await self.fake.wait_for(lambda f: bool(f.sent("deleteWebhook")), timeout=60)

    async def _close(self) -> None:
        self.stop.set()
        await asyncio.wait_for(self.task, 60)
        await self._running.__aexit__(None, None, None)

    def close(self) -> None:
        self.run(self._close())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


@pytest.fixture(scope="module")
def bot(tmp_path_factory: pytest.TempPathFactory, model_dirs: dict[str, Path]) -> Iterator[Bot]:
    running = Bot(model_dirs["bert"], tmp_path_factory.mktemp("fuzz"))
    yield running
    running.close()


class ErrorHandlerCalls(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


users = st.integers(min_value=5000, max_value=5004)
texts = st.lists(st.sampled_from(WORDS), min_size=0, max_size=6).map(" ".join)


@st.composite
def updates(draw: st.DrawFn) -> tuple[str, dict[str, Any]]:
    kind = draw(st.sampled_from(["text", "caption", "edit", "callback", "inline", "group"]))
    user = {"id": draw(users), "is_bot": False, "first_name": "Fuzz"}
    private = {"id": user["id"], "type": "private", "first_name": "Fuzz"}
    text = draw(texts) or "x"
    return kind, {"user": user, "private": private, "text": text, "data": draw(st.sampled_from(DATA)),
                  "inaccessible": draw(st.booleans()), "message_id": draw(st.integers(1, 10**6))}  # fmt: skip


async def _push(fake: FakeTelegram, kind: str, u: dict[str, Any]) -> None:
    if kind == "text":
        await fake.push("message", fake.message(u["private"], u["user"], u["text"]))
    elif kind == "caption":
        await fake.push(
            "message", fake.message(u["private"], u["user"], photo=[{"file_id": "p", "file_unique_id": "p",
                                                                      "width": 1, "height": 1}], caption=u["text"])
        )  # fmt: skip
    elif kind == "edit":
        edited = fake.message(u["private"], u["user"], u["text"], edit_date=1)
        await fake.push("edited_message", edited)
    elif kind == "callback":
        bot_user = {"id": BOT_ID, "is_bot": True, "first_name": "MLM Bot"}
        if u["inaccessible"]:
            message = {"chat": u["private"], "message_id": u["message_id"], "date": 0}
        else:
            message = fake.message(u["private"], bot_user, "an old answer")
        await fake.press(u["user"], message, u["data"])
    elif kind == "inline":
        await fake.inline(u["user"], u["text"])
    else:
        await fake.push("message", fake.message(GROUP, u["user"], u["text"]))


def _expects_reply(kind: str, u: dict[str, Any]) -> bool:
    text = u["text"]
    has_mask = any(m in text.lower() for m in ("[mask]", "<mask>"))
    return kind == "text" and not text.startswith("/") and (has_mask or "mlm" in text.lower())


# Derandomized: the same examples on every run, so CI is repeatable; change the seed locally to explore more.
@settings(
    max_examples=15,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(batch=st.lists(updates(), min_size=1, max_size=12))
def test_generated_updates_never_crash_and_get_their_answers(bot: Bot, batch: list) -> None:
    fake = bot.fake
    errors = ErrorHandlerCalls()
    error_log.addHandler(errors)  # the error handler's own logger (it was a logger nobody wrote to)
    try:
        before = len(fake.calls)
        for kind, u in batch:
            bot.run(_push(fake, kind, u))
        bot.run(fake.settle(1.5), timeout=120)
        calls = fake.calls[before:]
    finally:
        error_log.removeHandler(errors)
    assert errors.records == [], [r.getMessage() for r in errors.records]
    assert fake.rejections == [], "the bot sent something Telegram would refuse"
    answers = [c.params["callback_query_id"] for c in calls if c.method == "answerCallbackQuery"]
    presses = sum(1 for kind, _ in batch if kind == "callback")
    assert len(answers) == len(set(answers)) == presses, "every press answered, exactly once"
    for kind, u in batch:
        if _expects_reply(kind, u):
            assert any(
                c.method in ("sendMessage", "sendDocument") and int(c.params.get("chat_id", 0)) == u["user"]["id"]
                for c in calls
            ), f"no reply to {u['text']!r}"
