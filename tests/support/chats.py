"""Shared test helpers (chats)."""

from __future__ import annotations

import asyncio
import functools
from typing import Any

from bot.guides import Guide, load_library, page_environment
from bot.storage.tables import Interaction
from bot.text.render import Renderer
from tests.support.fake_telegram import FakeTelegram, parse_html

GROUP = {"id": -1001555000111, "type": "supergroup", "title": "Creator's discussion"}


CHANNEL = {"id": -1001999000222, "type": "channel", "title": "Creator's channel"}


def texts(fake: FakeTelegram, chat_id: int) -> list[str]:
    return [c.params["text"] for c in fake.sent("sendMessage", chat_id)]


async def replies(fake: FakeTelegram, chat_id: int, count: int = 1, method: str = "sendMessage") -> list[Any]:
    await fake.wait_for(lambda f: len(f.sent(method, chat_id)) >= count)
    return fake.sent(method, chat_id)


def lesson_pages(fake: FakeTelegram, chat_id: int) -> list[dict]:
    """The bot's messages in this chat that are pages of the paced lesson (their buttons step through it)."""
    return [
        m for m in bot_messages(fake, chat_id)
        if any(b.get("callback_data", "").startswith("guide:") for row in keyboard(m) for b in row)
    ]  # fmt: skip


def keyboard(message: dict) -> list[list[dict]]:
    return (message.get("reply_markup") or {}).get("inline_keyboard", [])


def lesson_started(fake: FakeTelegram, chat_id: int, count: int = 1) -> bool:
    """``count`` lessons have begun in this chat (each starts with page 1 of N)."""
    return sum(lesson_started_by(m) for m in lesson_pages(fake, chat_id)) >= count


async def guide_received(fake: FakeTelegram, chat_id: int, user: dict | None = None) -> str:
    """Waits for the lesson's first page, presses "Whole guide at once", waits for every page and the experiments
    after them, and returns the visible text of the chat's messages."""
    await fake.wait_for(lambda f: lesson_started(f, chat_id), timeout=30)
    first = [m for m in lesson_pages(fake, chat_id) if lesson_started_by(m)][-1]
    before = len(fake.sent("sendMessage", chat_id))
    await fake.press(user or fake.user(chat_id), first, "guide:mlm:all")
    whole = mlm_guide().page_count + 1  # the pages, then the experiments
    await fake.wait_for(lambda f: len(f.sent("sendMessage", chat_id)) >= before + whole, timeout=30)
    return "\n".join(parse_html(t) for t in texts(fake, chat_id))


def lesson_started_by(message: dict) -> bool:
    return any(b.get("callback_data") == "guide:mlm:all" for row in keyboard(message) for b in row)


async def guide_document(fake: FakeTelegram, chat_id: int, user: dict | None = None) -> dict:
    """Presses the lesson's Download button (on its latest page) and returns the document sent."""
    count = len(fake.sent("sendDocument", chat_id))
    await fake.press(user or fake.user(chat_id), lesson_pages(fake, chat_id)[-1], "guide:mlm:md")
    await fake.wait_for(lambda f: len(f.sent("sendDocument", chat_id)) > count, timeout=30)
    return fake.sent("sendDocument", chat_id)[-1].params["document"]


async def logged_rows(repo, kind: str | None = None, count: int = 1) -> list[Interaction]:
    """The logged interactions (of ``kind``), waiting up to 10 s for ``count`` of them: the log is written
    after the reply, so a test that has seen the reply may look a moment too early."""
    for _ in range(100):
        rows = [i for i in await repo.interactions.all() if kind is None or i.kind == kind]
        if len(rows) >= count:
            return rows
        await asyncio.sleep(0.1)
    return rows


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


async def can_dm(repo, user_id: int) -> bool:
    row = await repo.users.get(user_id)
    return bool(row and row.can_dm)


async def blocked(repo, user_id: int) -> bool:
    row = await repo.users.get(user_id)
    return bool(row and row.blocked and not row.can_dm)


def bot_messages(fake: FakeTelegram, chat_id: int) -> list[dict]:
    return [m for m in fake._messages.values() if m["chat"]["id"] == chat_id and m.get("from", {}).get("is_bot")]


def has_said(fake: FakeTelegram, chat_id: int, phrase: str) -> bool:
    return any(phrase in parse_html(c.params["text"]) for c in fake.sent("sendMessage", chat_id))


async def kinds_of(repo, user_id: int, kind: str) -> list[str]:
    return [row.kind for row in await repo.interactions.all() if row.user_id == user_id and row.kind == kind]


async def wait_until_said(fake: FakeTelegram, chat_id: int, phrase: str) -> None:
    await fake.wait_for(
        lambda f: any(phrase in parse_html(c.params["text"]) for c in f.sent("sendMessage", chat_id)), timeout=30
    )


SECRET = "s3cret_token-for-tests"


def update_body(fake: FakeTelegram, user_id: int, text: str, update_id: int) -> dict:
    user = fake.user(user_id)
    return {"update_id": update_id, "message": fake.message(fake.private_chat(user), user, text)}


@functools.cache
def mlm_guide() -> Guide:
    """The shipped MLM guide, loaded as the bot loads it."""
    renderer = Renderer()
    return load_library(None, environment=page_environment(renderer.template_loader, renderer.template_globals)).default


def mlm_pages(model_name: str = "x", keyword: str | None = None, language: str = "english") -> list[str]:
    """The MLM guide's pages as the HTML the bot sends."""
    return [page.html for page in mlm_guide().pages(language, model_name, keyword)]
