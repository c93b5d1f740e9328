"""Shared test helpers (chats)."""

from __future__ import annotations

import asyncio
from typing import Any

from bot.storage.tables import Interaction
from tests.support.fake_telegram import FakeTelegram, parse_html

GROUP = {"id": -1001555000111, "type": "supergroup", "title": "Creator's discussion"}


CHANNEL = {"id": -1001999000222, "type": "channel", "title": "Creator's channel"}


def texts(fake: FakeTelegram, chat_id: int) -> list[str]:
    return [c.params["text"] for c in fake.sent("sendMessage", chat_id)]


async def replies(fake: FakeTelegram, chat_id: int, count: int = 1, method: str = "sendMessage") -> list[Any]:
    await fake.wait_for(lambda f: len(f.sent(method, chat_id)) >= count)
    return fake.sent(method, chat_id)


async def guide_received(fake: FakeTelegram, chat_id: int) -> str:
    """Waits for the guide (messages, then the .md document) and returns the messages' visible text."""
    await replies(fake, chat_id, 1, "sendDocument")
    return "\n".join(parse_html(t) for t in texts(fake, chat_id))


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
