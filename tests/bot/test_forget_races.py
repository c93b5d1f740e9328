"""Writes that race /forget: what a request or an update began before the deletion is dropped, however late it is
handed to the writer (each write is stamped with the moment its request or update began, not the moment it is
written). The real bot, the fake Bot API, a real SQLite file, and the real writer."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta, timezone
from pathlib import Path

from httpx import AsyncClient

from bot.budgets import ModelCallLimit
from bot.chosen_languages import Languages
from bot.config import GuideSettings
from bot.logs import CURRENT, UpdateTrace
from bot.public_replies import CommentReplies
from bot.services import BotServices
from bot.storage.writer import Forgotten, InteractionWriter
from bot.storage.writes import InteractionEntry, TapSentenceKept, UserInfo
from bot.text.render import Renderer
from tests.support.bot_harness import bot_settings, eventually, free_port, running_bot
from tests.support.chats import bot_messages, replies
from tests.support.fake_telegram import TOKEN, FakeTelegram
from tests.support.held_model import HeldModel
from tests.support.mini_app import signed_init_data

ZED = 918_273_700


async def test_a_mini_app_request_running_during_forget_leaves_nothing(
    fake: FakeTelegram, bert_dir: Path, tmp_path: Path
) -> None:
    port = free_port()
    settings = bot_settings(fake, bert_dir, tmp_path, mini_app_url="https://bot.example.com/app", metrics_port=port)
    model = HeldModel(settings)
    zed = fake.user(ZED, username="zed")
    async with (
        running_bot(settings, fake, model=model) as repo,
        AsyncClient(base_url=f"http://127.0.0.1:{port}") as http,
    ):
        await fake.send_text(zed, "/start")
        await replies(fake, ZED)
        signed = {"Authorization": f"tma {signed_init_data(TOKEN, ZED)}"}
        running = asyncio.create_task(
            http.post("/app/api/fill-mask", json={"text": "slow SECRET [MASK]"}, headers=signed, timeout=30)
        )
        await eventually(lambda: _true(model.waiting == 1))
        await fake.send_text(zed, "/forget")
        await fake.wait_for(lambda f: any("forget:yes" in str(m.get("reply_markup")) for m in bot_messages(f, ZED)))
        question = [m for m in bot_messages(fake, ZED) if "forget:yes" in str(m.get("reply_markup"))][-1]
        await fake.press(zed, question, "forget:yes")
        await fake.wait_for(lambda f: len(f.sent("editMessageText", ZED)) >= 1)
        model.gate.set()  # the request finishes now, after the deletion, and logs its use
        assert (await running).status_code == 200
        await asyncio.sleep(1.0)  # the writer's turn
        rows = [r for r in await repo.interactions.all() if r.user_id == ZED or "SECRET" in (r.input_text or "")]
        assert rows == [], [(r.kind, r.input_text) for r in rows]
        assert await repo.users.get(ZED) is None


async def _true(value: bool) -> bool:
    return value


async def test_a_tap_sentence_kept_after_a_forget_is_dropped_when_its_update_began_before(tmp_path: Path) -> None:
    """The tap sentence's database copy is handed over after the reply (the reply never waits for the database): a
    /forget confirmed in between must still drop it, and with it a use the playground logs late."""
    written: list[object] = []

    async def write(ops) -> None:
        written.extend(ops)

    writer = InteractionWriter(write)
    await writer.start()
    renderer = Renderer()
    services = BotServices(
        settings=GuideSettings(_env_file=None), model=None, repo=None, writer=writer, renderer=renderer,  # type: ignore
        predict_limit=ModelCallLimit(20), inline_limit=ModelCallLimit(60, one_at_a_time=False),
        comment_replies=CommentReplies(renderer, writer.log), languages=Languages(lambda user_id: asyncio.sleep(0)),
    )  # fmt: skip
    began = datetime.now(timezone.utc) - timedelta(seconds=2)
    CURRENT.set(UpdateTrace(update_id=1, type="message", user_id=ZED, chat_type="private", started=0.0, began_at=began))
    key = services.remember_sentence("zed's SECRET words", ZED)
    assert await writer.forget(ZED) is Forgotten.DONE
    await services.keep_sentence(key)  # after the reply, after the forget
    await writer.log(InteractionEntry("playground", UserInfo(ZED), created_at=began))
    CURRENT.set(None)
    await writer.log(TapSentenceKept("later", ZED, "an update after the forget", datetime.now(timezone.utc)))
    await writer.close()
    assert [op.key for op in written if isinstance(op, TapSentenceKept)] == ["later"]
    assert not [op for op in written if isinstance(op, InteractionEntry)]
