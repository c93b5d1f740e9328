"""Two real ``mlm-bot run`` processes on one database (an SQLite file, and PostgreSQL when the run has one): one
is active, the other a hot standby that takes over when the active one dies or stops, losing and doubling
nothing (bot.storage.leader)."""

from __future__ import annotations

import asyncio
import os
import signal
from collections import Counter
from pathlib import Path

import pytest
import sqlalchemy as sa

from bot.storage.leader import FileLeadership, Leadership, PostgresLeadership, leadership_for
from tests.support.chats import GROUP, SECRET, bot_messages, update_body, wait_until_said
from tests.support.fake_telegram import FakeTelegram, parse_html
from tests.support.processes import MLM_BOT, bot_process_env

POSTGRES_URL = os.environ.get("TEST_POSTGRES_URL")
TAKEOVER_S = 10.0  # the promise: the standby answers within this long of the active one's death


async def _rows(url: str, query: str) -> list[tuple]:
    engine = sa.ext.asyncio.create_async_engine(url)
    try:
        async with engine.connect() as connection:
            return [tuple(row) for row in (await connection.execute(sa.text(query))).all()]
    finally:
        await engine.dispose()


class BotProcess:
    """A real ``mlm-bot run`` whose output goes to a file (read while it runs)."""

    def __init__(self, name: str, env: dict[str, str], cwd: Path) -> None:
        self.name, self.env, self.cwd = name, env, cwd
        self.log = cwd / f"{name}.log"
        self.process: asyncio.subprocess.Process | None = None

    async def start(self) -> BotProcess:
        with self.log.open("ab") as out:
            self.process = await asyncio.create_subprocess_exec(
                MLM_BOT, "run", env=self.env, cwd=self.cwd, stdout=out, stderr=asyncio.subprocess.STDOUT
            )
        return self

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    async def wait_for_line(self, text: str, timeout: float = 90) -> None:
        loop = asyncio.get_running_loop()
        end = loop.time() + timeout
        while text not in self.output():
            assert self.process.returncode is None, f"{self.name} exited:\n{self.output()}"
            assert loop.time() < end, f"{self.name} never logged {text!r}:\n{self.output()}"
            await asyncio.sleep(0.1)

    async def stop(self) -> None:
        if self.process is not None and self.process.returncode is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.process.wait(), 60)
            except asyncio.TimeoutError:
                self.process.kill()
                await self.process.wait()


def _env(fake: FakeTelegram, bert_dir: Path, tmp_path: Path, url: str) -> dict[str, str]:
    env = bot_process_env(fake, bert_dir, tmp_path / "unused.sqlite3", LOG_LEVEL="INFO", SHUTDOWN_BUDGET_S="8")
    env["DATABASE_URL"] = url
    return env


async def _active_and_standby(fake: FakeTelegram, env: dict[str, str], tmp_path: Path) -> tuple[BotProcess, BotProcess]:
    first = await BotProcess("first", env, tmp_path).start()
    await first.wait_for_line("is up (model")
    second = await BotProcess("second", env, tmp_path).start()
    await second.wait_for_line("standing by to take over")
    return first, second


async def _burst(fake: FakeTelegram, users: list[dict]) -> None:
    for user in users:
        await fake.send_text(user, f"Person {user['id']} says the cat sat on the [MASK].")


def _answers(fake: FakeTelegram, users: list[dict]) -> Counter:
    return Counter({u["id"]: len(fake.sent("sendMessage", u["id"])) for u in users})


async def test_the_standby_takes_over_within_seconds_of_a_kill_9_mid_burst(
    fake: FakeTelegram, bert_dir: Path, tmp_path: Path, database_url: str
) -> None:
    """kill -9 of the active process in the middle of a burst: the standby answers the rest within 10 s of the
    kill; every person gets an answer and an interaction row; none more than once beyond the updates that were
    being answered at the kill."""
    env = _env(fake, bert_dir, tmp_path, database_url)
    first, second = await _active_and_standby(fake, env, tmp_path)
    users = [fake.user(5000 + i) for i in range(60)]
    loop = asyncio.get_running_loop()
    try:
        assert "is up" not in second.output(), "only one process may be active"
        await _burst(fake, users)
        await fake.wait_for(lambda f: sum(_answers(f, users).values()) >= 10, timeout=60)
        first.process.kill()  # SIGKILL: no shutdown code runs; the database's lock goes with the process
        killed = loop.time()
        await first.process.wait()
        answered_before = set(+_answers(fake, users))
        assert len(answered_before) < len(users), "the kill must come mid-burst for this test to mean anything"
        await fake.wait_for(lambda f: all(_answers(f, users).values()), timeout=60)
        took = loop.time() - killed
        await fake.settle(1.0)
        assert "is up (model" in second.output()
        assert took < TAKEOVER_S, f"the rest were answered {took:.1f} s after the kill"
    finally:
        await first.stop()
        await second.stop()
    answers = _answers(fake, users)
    assert all(answers[u["id"]] >= 1 for u in users), "everyone got an answer"
    # At least once: an update answered in the moment before its "done" was written (the whole burst is handled
    # at once, so that can be many) is answered again by the standby; nothing else is, and nothing twice more.
    doubled = {user_id for user_id, n in answers.items() if n > 1}
    assert all(n <= 2 for n in answers.values()), f"answered more than twice: {answers}"
    assert doubled <= answered_before, "only an update answered before the kill can be answered again"
    logged = {user_id for (user_id,) in await _rows(database_url, "SELECT user_id FROM interactions")}
    assert {u["id"] for u in users} <= logged
    pending = await _rows(database_url, "SELECT count(*) FROM inbox WHERE status = 'pending'")
    assert pending == [(0,)]


async def test_a_rolling_deploy_loses_nothing_and_doubles_nothing(
    fake: FakeTelegram, bert_dir: Path, tmp_path: Path, database_url: str
) -> None:
    """The new process is up (standing by) before the old one gets SIGTERM in the middle of a burst: the old one
    finishes what it took, the new one takes over when it has gone, and every person gets exactly one answer."""
    env = _env(fake, bert_dir, tmp_path, database_url)
    old, new = await _active_and_standby(fake, env, tmp_path)
    users = [fake.user(6000 + i) for i in range(60)]
    try:
        await _burst(fake, users)
        await fake.wait_for(lambda f: sum(_answers(f, users).values()) >= 10, timeout=60)
        old.process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(old.process.wait(), 30) == 0, old.output()
        await fake.wait_for(lambda f: all(_answers(f, users).values()), timeout=60)
        await fake.settle(1.0)
        assert "is up (model" in new.output()
    finally:
        await old.stop()
        await new.stop()
    assert set(_answers(fake, users).values()) == {1}, "every person answered exactly once"


async def test_a_standby_leaves_the_database_alone_until_it_takes_over(
    fake: FakeTelegram, bert_dir: Path, tmp_path: Path
) -> None:
    """A standby polls nothing: Telegram sees one poller, whatever the number of processes (two pollers get 409
    Conflict from Telegram, and would each hand on the other's updates)."""
    env = _env(fake, bert_dir, tmp_path, f"sqlite+aiosqlite:///{tmp_path}/bot.sqlite3")
    first, second = await _active_and_standby(fake, env, tmp_path)
    try:
        polls = fake.polls
        await asyncio.sleep(2.0)
        assert fake.polls > polls, "the active one polls"
        assert "is up" not in second.output() and second.process.returncode is None
        assert len(fake.sent("deleteWebhook")) == 1, "the standby has not started polling"
    finally:
        await first.stop()
        await second.stop()


async def test_the_lock_is_the_databases_own(tmp_path: Path) -> None:
    """One holder at a time, free again when released; an in-memory database needs none."""
    url = f"sqlite+aiosqlite:///{tmp_path}/data/bot.sqlite3"
    one, two = leadership_for(url), leadership_for(url)
    assert isinstance(one, FileLeadership) and one.path == tmp_path / "data" / "bot.sqlite3.lock"
    assert await one.try_acquire() and not await two.try_acquire()
    stop = asyncio.Event()
    waiting = asyncio.create_task(two.acquire(stop))
    await asyncio.sleep(0.3)
    assert not waiting.done()
    await one.release()
    assert await asyncio.wait_for(waiting, 5) is True and two.held
    await two.release()
    assert type(leadership_for("sqlite+aiosqlite:///:memory:")) is Leadership


async def test_postgresql_advisory_lock_one_holder_and_a_lost_session_is_noticed() -> None:
    """The advisory lock admits one session; when the holder's session is cut (a server restart, a failover,
    an administrator), the holder notices within seconds and, the lock being taken by another, stands down."""
    if not POSTGRES_URL:
        pytest.skip("no PostgreSQL here: TEST_POSTGRES_URL is not set (.ci/run sets it when it can start one)")
    one, two = PostgresLeadership(POSTGRES_URL), PostgresLeadership(POSTGRES_URL)
    try:
        assert await one.try_acquire() and not await two.try_acquire()
        watching = asyncio.create_task(one.watch())
        await asyncio.sleep(2.5)
        assert not watching.done(), "a healthy session keeps the lock"
        # Cut the holder's session from outside, and let another process take the lock at once.
        await _rows(
            POSTGRES_URL,
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'mlm-bot leader lock' "
            "AND pid IN (SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted)",
        )
        stop = asyncio.Event()
        assert await asyncio.wait_for(two.acquire(stop), 5)
        await asyncio.wait_for(watching, 15)  # returns: lost
        assert not one.held and two.held
    finally:
        await one.release()
        await two.release()


async def test_tap_sentences_and_quiz_progress_outlive_the_process(
    fake: FakeTelegram, bert_dir: Path, tmp_path: Path
) -> None:
    """A tap button and a quiz poll sent by one process work on the next one (a restart, or the standby that
    took over): what they need is in the database, not only in the memory of the process that sent them."""
    from tests.support.bot_harness import bot_settings, running_bot

    settings = bot_settings(fake, bert_dir, tmp_path)
    ann = fake.user(7001, "Ann")
    async with running_bot(settings, fake):
        await fake.send_text(ann, "/start")
        await fake.send_text(ann, "green apples taste sweet")  # no mask: a button per word
        await wait_until_said(fake, ann["id"], "tap a word")
        await fake.send_text(ann, "/quiz")
        await fake.wait_for(lambda f: bool(f.sent("sendPoll", ann["id"])), timeout=30)
        await fake.settle(0.5)  # the writer has written what the process would have written before its end
    offer = next(m for m in bot_messages(fake, ann["id"]) if "tap a word" in m.get("text", ""))
    poll = [m for m in fake._messages.values() if m["chat"]["id"] == ann["id"] and "poll" in m][-1]
    async with running_bot(settings, fake):  # a new process: nothing of the first one's memory
        before = len(fake.sent("sendMessage", ann["id"]))
        await fake.press(ann, offer, offer["reply_markup"]["inline_keyboard"][0][1]["callback_data"])  # "apples"
        await wait_until_said(fake, ann["id"], "I hid")
        answer = next(
            c.params["text"] for c in fake.sent("sendMessage", ann["id"])[before:] if "I hid" in c.params["text"]
        )
        assert "apples" in answer
        await fake.answer_poll(ann, poll["poll"]["id"], [0])
        await fake.wait_for(lambda f: len(f.sent("sendPoll", ann["id"])) >= 2, timeout=30)
        second = fake.sent("sendPoll", ann["id"])[-1].params["question"]
        assert second != fake.sent("sendPoll", ann["id"])[0].params["question"], "the quiz went on to question 2"
        await fake.settle(0.5)
    from bot.text.render import Renderer

    lost = parse_html(Renderer().html("quiz_lost"))
    assert all(parse_html(c.params["text"]) != lost for c in fake.sent("sendMessage", ann["id"]))


async def test_webhook_deliveries_a_standby_stores_are_answered_by_the_active_one_once(
    fake: FakeTelegram, bert_dir: Path, tmp_path: Path
) -> None:
    """Webhook mode behind a load balancer: Telegram's posts reach every replica. The standby stores what it is
    sent (and answers Telegram 200); the active one hands those on within a second or two, each once."""
    import httpx

    from tests.support.bot_harness import bot_settings, free_port, running_bot

    def replica(port: int):
        return bot_settings(
            fake, bert_dir, tmp_path, webhook_url="https://bot.example.com/telegram/hook", webhook_secret=SECRET,
            webhook_listen="127.0.0.1", webhook_port=port,
        )  # fmt: skip

    active_port, standby_port = free_port(), free_port()
    people = range(7100, 7110)
    async with running_bot(replica(active_port), fake), running_bot(replica(standby_port), fake):
        async with httpx.AsyncClient(timeout=10) as client:
            for _ in range(300):  # the standby says so on /healthz (and is healthy), once its server is up
                try:
                    health = await client.get(f"http://127.0.0.1:{standby_port}/healthz")
                except httpx.ConnectError:  # running_bot returns once either replica has spoken to Telegram
                    await asyncio.sleep(0.1)
                    continue
                # it can say "standby" while its model still loads (503): healthy is when both hold
                if health.status_code == 200 and "standby" in health.json()["checks"]["updates"]:
                    break
                await asyncio.sleep(0.1)
            assert health.status_code == 200 and "standby" in health.json()["checks"]["updates"], health.text
            for n, user_id in enumerate(people):
                port = standby_port if n % 2 == 0 else active_port  # the balancer's round robin
                answer = await client.post(
                    f"http://127.0.0.1:{port}/telegram/hook",
                    json=update_body(fake, user_id, "The cat sat on the [MASK].", 90_000 + n),
                    headers={"X-Telegram-Bot-Api-Secret-Token": SECRET},
                )
                assert answer.status_code == 200
            await fake.wait_for(lambda f: all(f.sent("sendMessage", u) for u in people), timeout=15)
            await fake.settle(2.5)  # two more turns of the active one's look at the inbox: nothing again
    assert all(len(fake.sent("sendMessage", u)) == 1 for u in people)


async def test_a_reply_another_process_left_in_the_outbox_is_sent_by_the_active_one(
    fake: FakeTelegram, bert_dir: Path, tmp_path: Path
) -> None:
    """A public reply owed by a process that stood down (its row in the outbox, nobody sending it) is taken up
    by the active process without waiting for a restart; the ones the active one is sending are left alone."""
    from datetime import datetime, timedelta, timezone

    from telegram import InlineKeyboardButton, InlineKeyboardMarkup

    from bot.public_replies import Commenter, Unsent, owed
    from bot.storage.tables import OutboxReply
    from bot.storage.writes import InteractionEntry, UserInfo
    from tests.support.bot_harness import bot_settings, running_bot

    settings = bot_settings(fake, bert_dir, tmp_path)
    keyboard = InlineKeyboardMarkup([[InlineKeyboardButton("Get the guide", url="https://t.me/mlm_test_bot?start=x")]])
    commenter = Commenter(41, "Orphan", 7200, InteractionEntry("comment", UserInfo(7200), chat_id=GROUP["id"]))
    async with running_bot(settings, fake) as repo:
        row_id = await repo.outbox.add(owed(Unsent(GROUP["id"], 40, commenter, keyboard)))
        await fake.settle(2.5)
        assert not fake.sent("sendMessage", GROUP["id"]), "a row just written may be one its writer is queueing"
        async with repo.db.sessions.begin() as session:  # owed for a while: left by a process that is gone
            row = await session.get(OutboxReply, row_id)
            row.created_at = datetime.now(timezone.utc) - timedelta(seconds=60)
        await fake.wait_for(lambda f: bool(f.sent("sendMessage", GROUP["id"])), timeout=10)
        await fake.settle(2.5)
        assert await repo.outbox.pending() == []
    (reply,) = fake.sent("sendMessage", GROUP["id"])
    assert "tg://user?id=7200" in reply.params["text"]


async def test_a_process_that_loses_the_lock_stops_at_once_and_says_so(
    fake: FakeTelegram, bert_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """When the lock is lost (PostgreSQL cut the session and another process took it: the test above), the
    process stops polling at once and ``serve`` raises LostLeadership, which ``run`` answers by starting again
    as a standby."""
    from bot import runner
    from tests.support.bot_harness import bot_settings

    class Losable(Leadership):
        def __init__(self) -> None:
            self.lost = asyncio.Event()
            self.released = False

        async def watch(self) -> None:
            await self.lost.wait()

        async def release(self) -> None:
            self.released = True
            await super().release()

    lock = Losable()
    monkeypatch.setattr(runner, "leadership_for", lambda url: lock)
    serving = asyncio.create_task(runner.serve(bot_settings(fake, bert_dir, tmp_path), asyncio.Event()))
    await fake.wait_for(lambda f: bool(f.sent("deleteWebhook")), timeout=60)
    while fake.polls == 0:  # noqa: ASYNC110 - the fake counts polls without telling anyone
        await asyncio.sleep(0.05)
    lock.lost.set()
    with pytest.raises(runner.LostLeadership):
        await asyncio.wait_for(serving, 15)
    assert lock.released
    polls = fake.polls
    await asyncio.sleep(1.5)
    assert fake.polls == polls, "it polls no more"
