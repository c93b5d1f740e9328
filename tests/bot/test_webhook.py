"""Webhook mode end to end: the real bot (``bot.runner.serve``) with ``WEBHOOK_URL`` set, the fake Bot API POSTing
each update to it as Telegram does (with the secret token, again until it gets a 2xx)."""

from __future__ import annotations

import asyncio
import logging
import re
import threading
from pathlib import Path

import httpx
import pytest

from bot.storage.tables import Interaction
from models.serving.client import LocalFillMask
from tests.support.bot_harness import bot_settings, eventually, free_port, running_bot
from tests.support.chats import SECRET, lesson_started, update_body
from tests.support.database import hold_write_lock
from tests.support.fake_telegram import TOKEN, FakeTelegram


@pytest.fixture(autouse=True)
def no_secrets_in_logs(caplog: pytest.LogCaptureFixture):
    caplog.set_level(logging.DEBUG)
    yield
    assert TOKEN.split(":")[1] not in caplog.text


@pytest.fixture
def port() -> int:
    return free_port()


@pytest.fixture
def settings(fake: FakeTelegram, bert_dir: Path, tmp_path: Path, port: int):
    return bot_settings(
        fake,
        bert_dir,
        tmp_path,
        webhook_url=f"http://127.0.0.1:{port}/telegram/hook",
        webhook_secret=SECRET,
        webhook_listen="127.0.0.1",
        webhook_port=port,
    )


async def test_updates_posted_to_the_webhook_get_their_answers(fake: FakeTelegram, settings, port: int) -> None:
    async with running_bot(settings, fake) as repo:
        (hook,) = fake.sent("setWebhook")
        assert hook.params["url"] == f"http://127.0.0.1:{port}/telegram/hook"
        assert hook.params["secret_token"] == SECRET
        assert not fake.sent("deleteWebhook")  # no polling: getUpdates would be refused while a webhook is set

        ann = fake.user(501)
        await fake.send_text(ann, "/start")
        await fake.send_text(ann, "MLM")
        await fake.send_text(ann, "The cat sat on the [MASK].")
        await fake.wait_for(lambda f: any("Best guess" in c.params.get("text", "") for c in f.sent("sendMessage", 501)))
        await fake.wait_for(lambda f: lesson_started(f, 501))  # the lesson begun
        kinds = await eventually(
            lambda: _kinds(repo, 501),
        )
        assert {"start", "guide", "prediction"} <= set(kinds)
        assert {status for _, status in fake.deliveries} == {200}


async def _kinds(repo, user_id: int) -> list[str]:
    rows = await repo.interactions.all()
    kinds = [row.kind for row in rows if isinstance(row, Interaction) and row.user_id == user_id]
    return kinds if len(set(kinds)) >= 3 else []


async def test_a_request_without_the_right_secret_is_refused_and_not_handled(
    fake: FakeTelegram, settings, port: int
) -> None:
    url = f"http://127.0.0.1:{port}/telegram/hook"
    async with running_bot(settings, fake) as repo, httpx.AsyncClient() as client:
        body = update_body(fake, 502, "MLM", update_id=9001)
        wrong = await client.post(url, json=body, headers={"X-Telegram-Bot-Api-Secret-Token": "guess"})
        missing = await client.post(url, json=body)
        assert (wrong.status_code, missing.status_code) == (403, 403)
        # The right secret on another update: answered, and the refused one never was.
        right = await client.post(
            url, json=update_body(fake, 503, "MLM", update_id=9002), headers={"X-Telegram-Bot-Api-Secret-Token": SECRET}
        )
        assert right.status_code == 200
        await fake.wait_for(lambda f: bool(f.sent("sendMessage", 503)))
        await fake.settle()
        assert not fake.sent("sendMessage", 502)
        stored = {row.update_id for row in await repo.inbox.unfinished()} | await _finished_ids(repo)
        assert 9001 not in stored and 9002 in stored


async def _finished_ids(repo) -> set[int]:
    from sqlalchemy import select

    from bot.storage.tables import InboxUpdate

    async with repo.db.sessions() as session:
        return set((await session.scalars(select(InboxUpdate.update_id))).all())


@pytest.mark.parametrize(
    ("body", "headers", "status"),
    [
        (b"{not json", {}, 400),
        (b"[1, 2, 3]", {}, 400),
        (b'{"update_id": "seven"}', {}, 400),
        (b'{"message": {"text": "no update id"}}', {}, 400),
        (b'{"update_id": 7, "message": "not a message"}', {}, 400),
        (b"\xff\xfe not utf-8", {}, 400),
        (b"x" * (1024 * 1024 + 1), {}, 413),
        (b"{}", {"content-length": "99999999999"}, 413),
    ],
    ids=["not-json", "a-list", "id-not-a-number", "no-id", "message-not-an-object", "not-utf8", "too-big", "lies"],
)
async def test_a_malformed_or_oversized_body_gets_a_4xx_and_the_bot_keeps_serving(
    fake: FakeTelegram, settings, port: int, body: bytes, headers: dict, status: int
) -> None:
    url = f"http://127.0.0.1:{port}/telegram/hook"
    async with running_bot(settings, fake), httpx.AsyncClient() as client:
        if "content-length" in headers:  # a header that promises more than is sent: refused before reading
            answer = await _raw_post(
                port, "/telegram/hook", body, {**headers, "X-Telegram-Bot-Api-Secret-Token": SECRET}
            )
        else:
            answer = (
                await client.post(url, content=body, headers={"X-Telegram-Bot-Api-Secret-Token": SECRET})
            ).status_code
        assert answer == status
        await fake.send_text(fake.user(504), "MLM")  # and the next real update is answered
        await fake.wait_for(lambda f: bool(f.sent("sendMessage", 504)))


async def _raw_post(port: int, path: str, body: bytes, headers: dict) -> int:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    lines = [f"POST {path} HTTP/1.1", "host: 127.0.0.1", *(f"{k}: {v}" for k, v in headers.items()), "", ""]
    writer.write("\r\n".join(lines).encode() + body)
    await writer.drain()
    status_line = await asyncio.wait_for(reader.readline(), 10)
    writer.close()
    return int(status_line.split()[1])


async def test_the_same_update_delivered_twice_is_answered_once(fake: FakeTelegram, settings, port: int) -> None:
    url = f"http://127.0.0.1:{port}/telegram/hook"
    body = update_body(fake, 505, "MLM", update_id=9100)
    headers = {"X-Telegram-Bot-Api-Secret-Token": SECRET}
    async with running_bot(settings, fake), httpx.AsyncClient() as client:
        first, second = await asyncio.gather(
            client.post(url, json=body, headers=headers), client.post(url, json=body, headers=headers)
        )
        assert (first.status_code, second.status_code) == (200, 200)
        await fake.wait_for(lambda f: lesson_started(f, 505))
        await fake.settle()
        assert lesson_started(fake, 505) and not lesson_started(fake, 505, 2)


async def test_an_update_the_database_cannot_store_is_refused_and_telegram_sends_it_again(
    fake: FakeTelegram, settings, tmp_path: Path
) -> None:
    """Stored before the 200: while SQLite's write lock is held past the busy timeout (5 s), the webhook answers
    503 and handles nothing; Telegram sends the update again and, once the lock is gone, it is answered."""
    async with running_bot(settings, fake):
        locked = threading.Event()
        holder = threading.Thread(target=hold_write_lock, args=(tmp_path / "bot.sqlite3", 6.5, locked))
        holder.start()
        await asyncio.to_thread(locked.wait)
        await fake.send_text(fake.user(506), "MLM")
        await fake.wait_for(lambda f: any(status == 503 for _, status in f.deliveries), timeout=15)
        assert not fake.sent("sendMessage", 506)
        await asyncio.to_thread(holder.join)
        await fake.wait_for(lambda f: bool(f.sent("sendMessage", 506)), timeout=15)
    statuses = [status for update_id, status in fake.deliveries]
    assert statuses[0] == 503 and statuses[-1] == 200


async def test_a_get_or_another_path_is_not_the_webhook(fake: FakeTelegram, settings, port: int) -> None:
    async with running_bot(settings, fake), httpx.AsyncClient() as client:
        headers = {"X-Telegram-Bot-Api-Secret-Token": SECRET}
        assert (await client.get(f"http://127.0.0.1:{port}/telegram/hook", headers=headers)).status_code == 405
        assert (await client.post(f"http://127.0.0.1:{port}/", json={}, headers=headers)).status_code == 404


async def test_health_and_metrics_are_on_the_webhook_server(fake: FakeTelegram, settings, port: int) -> None:
    async with running_bot(settings, fake), httpx.AsyncClient() as client:

        async def healthy():
            answer = await client.get(f"http://127.0.0.1:{port}/healthz")
            return answer if answer.status_code == 200 else None

        health = await eventually(healthy)  # "starting" until setWebhook has answered
        assert health is not None
        assert health.json()["checks"] == {"updates": "ok", "database": "ok", "model": "ok"}
        await fake.send_text(fake.user(507), "MLM")
        await fake.wait_for(lambda f: lesson_started(f, 507))
        metrics = (await client.get(f"http://127.0.0.1:{port}/metrics")).text
        assert 'mlm_bot_updates_total{type="message"} 1.0' in metrics


async def test_telegram_refusing_the_webhook_url_stops_the_start_with_one_line(
    fake: FakeTelegram, bert_dir: Path, tmp_path: Path
) -> None:
    from bot.runner import StartupError

    settings = bot_settings(
        fake, bert_dir, tmp_path, webhook_url="https://bot.example.com/hook", webhook_port=free_port(),
        webhook_listen="127.0.0.1",
    )  # fmt: skip
    settings.webhook_secret = None
    original = fake.api_setwebhook

    async def refuse(params):
        from tests.support.fake_telegram import ApiError

        raise ApiError(400, "Bad Request: bad webhook: Failed to resolve host: Name or service not known")

    fake.api_setwebhook = refuse  # type: ignore[method-assign]
    refused = r"(?i)Telegram refused WEBHOOK_URL https://bot\.example\.com/hook: .*resolve host"
    with pytest.raises(StartupError, match=refused):
        async with running_bot(settings, fake):
            pass
    fake.api_setwebhook = original  # type: ignore[method-assign]
    fake.rejections.clear()  # refused on purpose


class SlowStart(LocalFillMask):
    """The real model, loading until the test says so: the bot's webhook server is up meanwhile."""

    def __init__(self, settings) -> None:
        super().__init__(settings)
        self.gate = asyncio.Event()

    async def start(self) -> None:
        await self.gate.wait()
        await super().start()


async def test_an_update_posted_while_the_bot_starts_is_stored_then_answered(
    fake: FakeTelegram, settings, port: int
) -> None:
    """A restart in webhook mode: Telegram posts while the model loads. The update is stored and confirmed at
    once (no 503 that Telegram would retry later and later), and answered once the bot is up."""
    fake.webhook = {"url": f"http://127.0.0.1:{port}/telegram/hook", "secret_token": SECRET}  # the last run's
    await fake.send_text(fake.user(508), "MLM")
    model = SlowStart(settings)

    async def load_once_delivered() -> None:
        await fake.wait_for(lambda f: any(isinstance(status, int) for _, status in f.deliveries), timeout=30)
        model.gate.set()

    loading = asyncio.create_task(load_once_delivered())
    async with running_bot(settings, fake, model=model):
        await fake.wait_for(lambda f: lesson_started(f, 508), timeout=30)
    await loading
    statuses = [status for _, status in fake.deliveries if isinstance(status, int)]
    assert statuses == [200], fake.deliveries  # stored before the model was ready, not refused
    assert lesson_started(fake, 508) and not lesson_started(fake, 508, 2)


def test_the_default_secret_is_derived_from_the_token_the_same_everywhere(fake: FakeTelegram, bert_dir, tmp_path):
    """No WEBHOOK_SECRET: every start and every replica of one bot derive the same secret (Telegram's alphabet,
    43 characters); another bot's differs; a secret that is set is used as it is."""
    one = bot_settings(fake, bert_dir, tmp_path, webhook_secret=None)
    two = bot_settings(fake, bert_dir, tmp_path / "other", webhook_secret="")
    other_bot = bot_settings(fake, bert_dir, tmp_path, telegram_bot_token="987654321:" + "x" * 35)
    assert one.webhook_secret_value() == two.webhook_secret_value()
    assert re.fullmatch(r"[A-Za-z0-9_-]{43}", one.webhook_secret_value())
    assert other_bot.webhook_secret_value() != one.webhook_secret_value()
    assert TOKEN not in one.webhook_secret_value() and TOKEN.split(":")[1] not in one.webhook_secret_value()
    assert bot_settings(fake, bert_dir, tmp_path, webhook_secret=SECRET).webhook_secret_value() == SECRET


async def test_a_restart_with_the_default_settings_refuses_no_delivery(
    fake: FakeTelegram, bert_dir: Path, tmp_path: Path, port: int
) -> None:
    """WEBHOOK_SECRET empty (``.env.example``'s default). The first run registers the webhook; the second run (a new
    process: settings read afresh) loads its model slowly while Telegram keeps posting with the secret it has:
    every delivery is stored and gets 200 (a random secret per start answered 403 until the model was loaded),
    and each update is answered once."""

    def fresh():
        return bot_settings(
            fake, bert_dir, tmp_path, webhook_url=f"http://127.0.0.1:{port}/telegram/hook", webhook_secret=None,
            webhook_listen="127.0.0.1", webhook_port=port,
        )  # fmt: skip

    async with running_bot(fresh(), fake):
        await fake.send_text(fake.user(520), "MLM")
        await fake.wait_for(lambda f: lesson_started(f, 520), timeout=30)
    registered = fake.webhook  # what Telegram keeps between the two runs
    assert registered is not None and registered["secret_token"] == fresh().webhook_secret_value()
    first_run = len(fake.deliveries)

    settings = fresh()
    model = SlowStart(settings)
    people = range(521, 526)

    async def post_while_loading() -> None:
        await fake.wait_for(lambda f: bool(f.sent("setWebhook")[1:]), timeout=30)  # registered before loading
        for person in people:
            await fake.send_text(fake.user(person), "The cat sat on the [MASK].")
        await fake.wait_for(lambda f: len([d for d in f.deliveries[first_run:] if d[1] == 200]) >= 5, timeout=30)
        model.gate.set()

    loading = asyncio.create_task(post_while_loading())
    async with running_bot(settings, fake, model=model):
        await loading
        await fake.wait_for(lambda f: all(f.sent("sendMessage", p) for p in people), timeout=30)
        await fake.settle(0.5)
    statuses = [status for _, status in fake.deliveries[first_run:]]
    assert statuses and set(statuses) == {200}, statuses
    assert all(len(fake.sent("sendMessage", p)) == 1 for p in people), "each answered once"


async def test_an_update_stored_as_the_start_up_replay_reads_the_inbox_is_handed_on_once(
    fake: FakeTelegram, tmp_path: Path
) -> None:
    """The race the replay's guard is for: the endpoint has stored a new update (and has not yet handed it on)
    when the replay reads the inbox and finds it pending. One of the two hands it on, never both. (The guard was
    a copy of the set, taken while still empty: the update went to the handlers twice.)"""
    from telegram.ext import ApplicationBuilder

    from bot.http.health import Health
    from bot.http.metrics import BotMetrics
    from bot.http.server import create_app
    from bot.http.webhook import Webhook
    from bot.storage import Database, Repository
    from bot.updates.inbox import replay_unfinished

    database = Database(f"sqlite+aiosqlite:///{tmp_path}/race.sqlite3")
    await database.migrate()
    inbox = Repository(database).inbox
    stored, go_on = asyncio.Event(), asyncio.Event()
    real_store = inbox.store

    async def store_then_pause(updates):
        new = await real_store(updates)
        stored.set()
        await go_on.wait()  # the endpoint resumes only after the replay has run
        return new

    inbox.store = store_then_pause  # type: ignore[method-assign]
    application = ApplicationBuilder().token(TOKEN).updater(None).build()
    webhook = Webhook("http://x/hook", "/hook", SECRET, application, inbox, accepting=True)
    app = create_app(Health(database, None, webhook=True), BotMetrics(), webhook)
    body = update_body(fake, 531, "MLM", update_id=9400)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://x") as client:
        posting = asyncio.create_task(
            client.post("/hook", json=body, headers={"X-Telegram-Bot-Api-Secret-Token": SECRET})
        )
        await stored.wait()
        queued = await replay_unfinished(application, inbox, max_age_s=600, skip=webhook.handed_on)
        go_on.set()
        assert (await posting).status_code == 200
    await database.close()
    handed = []
    while not application.update_queue.empty():
        handed.append(application.update_queue.get_nowait().update_id)
    assert queued == 1 and handed == [9400]
