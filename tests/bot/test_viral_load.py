"""A viral post's Mini App users against the real bot: the playground's queue holds about a second of work at
most (past it: 429 with Retry-After, which the page obeys: tests/bot/test_playground.py), and the chat, which the
model serves first, still gets in. ``benchmarks/viral_mini_app.py`` measures
the same with hundreds of users."""

from __future__ import annotations

import asyncio
import threading

import pytest
from httpx import AsyncClient

from models.engine.threads import torch_thread
from models.serving.client import LocalFillMask
from tests.support.bot_harness import bot_settings, free_port, running_bot
from tests.support.chats import replies
from tests.support.fake_telegram import TOKEN, FakeTelegram
from tests.support.mini_app import signed_init_data

pytestmark = pytest.mark.usefixtures("no_token_in_logs")

URL = "https://bot.example.com/app"
SENTENCE = {"text": "The cat sat on the [MASK]."}


def signed(user_id: int) -> dict[str, str]:
    return {"Authorization": f"tma {signed_init_data(TOKEN, user_id)}"}


async def test_a_full_playground_queue_answers_429_with_retry_after_and_the_chat_still_gets_in(
    fake: FakeTelegram, bert_dir, tmp_path
) -> None:
    port = free_port()
    settings = bot_settings(fake, bert_dir, tmp_path, mini_app_url=URL, metrics_port=port, predictions_per_minute=2)
    model = LocalFillMask(settings)
    async with running_bot(settings, fake, model=model), AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
        await fake.send_text(fake.user(76), "The cat sat on the [MASK].")  # up, and answering
        await replies(fake, 76)
        assert model.batcher is not None
        release = threading.Event()
        torch_thread().submit(release.wait, 30)  # the model is busy: what comes in now waits in the queue
        model.batcher.seconds_per_input = 0.5  # each waiting sentence is half a second of model time
        try:
            asked = []
            # The first goes into the (busy) model; the next three find 0, 0.5 and 1.0 s waiting: taken.
            for user in (1, 2, 3, 4):
                asked.append(asyncio.create_task(http.post("/app/api/fill-mask", json=SENTENCE, headers=signed(user))))
                await asyncio.sleep(0.3)
            assert model.backlog_seconds() == pytest.approx(1.5)
            refused = await http.post("/app/api/fill-mask", json=SENTENCE, headers=signed(5))
            assert refused.status_code == 429 and refused.headers["retry-after"] == "2"
            assert refused.json()["code"] == "playground_busy" and refused.json()["retry_after"] == 2
            assert "Trying again in 2 s" in refused.json()["error"]
            # A person in the chat comes in last: the chat is not refused (the batcher serves it before the
            # playground's waiting work: tests/serving/test_batcher.py).
            await fake.send_text(fake.user(77), "The dog ran to the [MASK].")
            await asyncio.sleep(0.3)
        finally:
            release.set()
        (chat,) = await replies(fake, 77)
        answers = await asyncio.gather(*asked)
        assert all(r.status_code == 200 and r.json()["masks"] for r in answers)
        assert "Best guess" in chat.params["text"]
        assert model.batcher.backlog_seconds() == 0
        # A person over their own pace gets 429 with Retry-After too (it had none).
        for _ in range(3):
            mine = await http.post("/app/api/fill-mask", json=SENTENCE, headers=signed(6))
        assert mine.status_code == 429 and mine.json()["code"] == "rate_limited"
        assert int(mine.headers["retry-after"]) >= 1
