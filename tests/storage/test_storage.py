"""The interaction log on real databases: SQLite files, and PostgreSQL when one can be started
(``.ci/run`` starts one on loopback and sets TEST_POSTGRES_URL)."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from bot.analytics import gather_stats
from bot.storage import Database, Repository
from bot.storage.database import upgrade
from bot.storage.repository import nearest_rank
from bot.storage.tables import Base, Interaction, User
from bot.storage.writer import InteractionWriter
from bot.storage.writes import Forget, InteractionEntry, LanguageChosen, OwedReply, UserInfo, UserStarted, write_all
from tests.support.database import entry, hold_write_lock

POSTGRES_URL = os.environ.get("TEST_POSTGRES_URL")


@pytest.fixture
async def repo(database_url: str) -> Repository:
    database = Database(database_url)
    await database.migrate()
    yield Repository(database)
    await database.close()


CI_POSTGRES = Path(__file__).resolve().parents[2] / ".ci" / "postgres"  # `restart`: the server this run started


async def table_names(url: str) -> set[str]:
    database = Database(url)
    async with database.engine.connect() as connection:
        names = await connection.run_sync(lambda c: set(sa.inspect(c).get_table_names()))
    await database.close()
    return names


async def test_migrations_from_an_empty_database(database_url: str) -> None:
    await asyncio.to_thread(upgrade, database_url)
    tables = {
        "users",
        "interactions",
        "comment_triggers",
        "inbox",
        "outbox",
        "tap_sentences",
        "quiz_runs",
        "alembic_version",
    }
    assert tables <= await table_names(database_url)
    database = Database(database_url)
    async with database.engine.connect() as connection:
        assert (await connection.execute(sa.text("SELECT version_num FROM alembic_version"))).scalar() == "0013"
        columns = await connection.run_sync(
            lambda c: {col["name"] for col in sa.inspect(c).get_columns("interactions")}
        )
        user_columns = await connection.run_sync(lambda c: {col["name"] for col in sa.inspect(c).get_columns("users")})
        # The migrations build exactly the schema the code's models describe (nothing missing, nothing extra).
        differences = await connection.run_sync(
            lambda c: compare_metadata(MigrationContext.configure(c), Base.metadata)
        )
    await database.close()
    assert differences == []
    assert {"language", "chosen_language", "can_dm", "blocked"} <= user_columns
    assert {
        "user_id",
        "chat_id",
        "chat_type",
        "kind",
        "trigger",
        "input_text",
        "model_name",
        "predictions",
        "top_prediction",
        "latency_ms",
        "outcome",
        "created_at",
    } <= columns


async def insert_ann(connection: sa.ext.asyncio.AsyncConnection) -> None:
    """User 7, written with plain SQL, as an older revision's schema has it."""
    await connection.execute(
        sa.text(
            "INSERT INTO users (id, username, language, first_seen, last_seen, can_dm, blocked) "
            "VALUES (7, 'ann', 'en', :now, :now, true, false)"
        ),
        {"now": datetime.now(timezone.utc)},
    )


async def test_migration_from_the_previous_revision_keeps_and_fills_data(database_url: str) -> None:
    await asyncio.to_thread(upgrade, database_url, "0001")
    database = Database(database_url)
    async with database.engine.begin() as connection:
        await insert_ann(connection)
        await connection.execute(
            sa.text(
                "INSERT INTO interactions (created_at, user_id, kind, input_text, predictions, outcome) "
                "VALUES (:now, 7, 'prediction', 'the [MASK] sat', :p, 'ok')"
            ),
            {"now": datetime.now(timezone.utc), "p": '[[{"token": "cat", "score": 0.5}]]'},
        )
    await database.close()
    await asyncio.to_thread(upgrade, database_url)
    repo = Repository(Database(database_url))
    (row,) = await repo.interactions.all()
    assert row.input_text == "the [MASK] sat" and row.top_prediction == "cat" and row.user_id == 7
    await repo.db.close()


async def test_migration_0006_finds_whose_inbox_and_outbox_rows_are(database_url: str) -> None:
    """Rows stored before the user_id columns existed get their sender from the stored update, so /forget finds
    them too."""
    await asyncio.to_thread(upgrade, database_url, "0005")
    database = Database(database_url)
    message = {"update_id": 1, "message": {"message_id": 5, "from": {"id": 7}, "chat": {"id": 7}, "text": "hi"}}
    answer = {"update_id": 2, "poll_answer": {"poll_id": "p", "user": {"id": 8}, "option_ids": [0]}}
    nobody = {"update_id": 3, "channel_post": {"message_id": 1, "chat": {"id": -100}}}
    now = datetime.now(timezone.utc)
    async with database.engine.begin() as connection:
        for update_id, update in ((1, message), (2, answer), (3, nobody), (4, "not json")):
            await connection.execute(
                sa.text("INSERT INTO inbox (update_id, received_at, payload, status) VALUES (:i, :now, :p, 'pending')"),
                {"i": update_id, "now": now, "p": update if isinstance(update, str) else json.dumps(update)},
            )
        await connection.execute(
            sa.text("INSERT INTO outbox (created_at, chat_id, thread, payload) VALUES (:now, -100, 5, :p)"),
            {"now": now, "p": json.dumps({"message_id": 9, "name": "Ann", "user_id": 7})},
        )
    await database.close()
    await asyncio.to_thread(upgrade, database_url)
    database = Database(database_url)
    async with database.engine.connect() as connection:
        inbox = dict((await connection.execute(sa.text("SELECT update_id, user_id FROM inbox"))).all())
        outbox = (await connection.execute(sa.text("SELECT user_id FROM outbox"))).scalar()
    await database.close()
    assert inbox == {1: 7, 2: 8, 3: None, 4: None} and outbox == 7


def test_the_product_never_uses_create_all() -> None:
    sources = "".join(p.read_text() for p in Path("bot").rglob("*.py"))
    assert "create_all" not in sources


async def test_1000_concurrent_interactions_are_all_written(repo: Repository) -> None:
    writer = InteractionWriter(repo.interactions.log_many, batch_size=100)
    await writer.start()
    await asyncio.gather(*(writer.log(entry(i)) for i in range(1000)))
    await writer.close()
    rows = await repo.interactions.all()
    assert len(rows) == 1000 and {r.input_text for r in rows} == {f"sentence {i} with [MASK]" for i in range(1000)}
    assert len({r.user_id for r in rows}) == 37 and {r.top_prediction for r in rows} == {f"w{i}" for i in range(5)}


async def test_a_locked_database_delays_writes_but_loses_none(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path}/locked.sqlite3"
    database = Database(url, busy_timeout_ms=100)
    await database.migrate()
    repo = Repository(database)
    writer = InteractionWriter(repo.interactions.log_many, max_buffer=20, retry_delay=0.05, max_retry_delay=0.3)
    await writer.start()
    locked = threading.Event()
    holder = threading.Thread(target=hold_write_lock, args=(tmp_path / "locked.sqlite3", 2.0, locked))
    holder.start()
    await asyncio.to_thread(locked.wait)
    started = time.monotonic()
    await asyncio.gather(*(writer.log(entry(i)) for i in range(60)))  # more than the buffer holds
    await writer.close()
    await asyncio.to_thread(holder.join)
    assert len(await repo.interactions.all()) == 60
    assert writer.retries > 0 and time.monotonic() - started > 1.0
    assert "buffer is full" in caplog.text  # loudly, at ERROR
    assert any(r.levelno == logging.ERROR and "buffer is full" in r.getMessage() for r in caplog.records)
    await database.close()


async def test_an_unreachable_database_is_retried_until_it_answers(
    repo: Repository, caplog: pytest.LogCaptureFixture
) -> None:
    """The connection is refused three times (a database restarting), then the same batch goes through."""

    class Restarting(type(repo.interactions)):
        failures = 3

        async def log_many(self, entries):
            if self.failures:
                self.failures -= 1
                raise ConnectionRefusedError(111, "Connection refused")
            await super().log_many(entries)

    writer = InteractionWriter(Restarting(repo.db).log_many, retry_delay=0.01)
    await writer.start()
    await asyncio.gather(*(writer.log(entry(i)) for i in range(30)))
    await writer.close()
    assert writer.retries == 3 and "retrying" in caplog.text
    assert len(await repo.interactions.all()) == 30


async def test_comment_claims_are_once_per_user_and_post(repo: Repository) -> None:
    results = await asyncio.gather(*(repo.comments.claim("-100:5", 42) for _ in range(10)))
    assert sorted(results) == [False] * 9 + [True]
    assert await repo.comments.claim("-100:6", 42) and await repo.comments.claim("-100:5", 43)


async def test_forget_deletes_the_user_and_everything_about_them(repo: Repository) -> None:
    now = datetime.now(timezone.utc)
    await write_all(repo.db, [UserStarted(UserInfo(1001, "ann"), now), entry(1), entry(2), entry(38)])
    await repo.comments.claim("-100:5", 1001)  # users 1001, 1002, 1001 above; the claim in 1001's name
    await repo.inbox.store([(1, '{"update_id": 1}', 1001), (2, '{"update_id": 2}', 1002), (3, "{}", None)])
    await write_all(repo.db, [OwedReply(-100, 5, 1001, "{}", now), OwedReply(-100, 5, 1002, "{}", now)])
    await write_all(repo.db, [Forget(1001, now)])
    assert await repo.users.get(1001) is None
    assert [r.user_id for r in await repo.interactions.all()] == [1002]
    assert await repo.comments.claim("-100:5", 1001)  # no record of the old claim either
    assert [row.update_id for row in await repo.inbox.unfinished()] == [2, 3], "the updates they sent are gone"
    assert [row.user_id for row in await repo.outbox.pending()] == [1002], "and the replies owed to them"


async def test_people_not_seen_within_the_retention_period_are_forgotten(repo: Repository) -> None:
    now = datetime.now(timezone.utc)
    group = entry(1, chat_id=-100777, chat_type="supergroup")  # 1001 in a group too
    await write_all(repo.db, [entry(1), entry(2), group])  # users 1001 and 1002
    async with repo.db.sessions.begin() as session:
        await session.execute(sa.update(User).where(User.id == 1001).values(last_seen=now - timedelta(days=100)))
    assert await repo.users.forget_inactive(now - timedelta(days=90)) == 1
    assert await repo.users.get(1001) is None and await repo.users.get(1002) is not None
    rows = await repo.interactions.all()  # what 1001 did stays counted, without their id
    assert sorted(r.user_id or 0 for r in rows) == [0, 0, 1002]
    # Not as the private chat's id either (the same number); the group's id is the group's.
    assert sorted((r.chat_id or 0, r.chat_type) for r in rows if r.user_id is None) == [
        (-100777, "supergroup"),
        (0, "private"),
    ]


async def test_forget_also_deletes_rows_of_their_private_chat_that_lack_their_id(repo: Repository) -> None:
    """Rows in a person's private chat without ``user_id`` (anonymised by an older version's retention, or written
    without a sender): the chat's id is the person's, and /forget takes them too."""
    now = datetime.now(timezone.utc)
    await write_all(repo.db, [entry(1), entry(2)])
    async with repo.db.sessions.begin() as session:
        await session.execute(sa.update(Interaction).where(Interaction.user_id == 1001).values(user_id=None))
    await write_all(repo.db, [Forget(1001, now)])
    assert [(r.user_id, r.chat_id) for r in await repo.interactions.all()] == [(1002, 1002)]


async def test_a_language_choice_is_kept_until_changed_or_forgotten(repo: Repository) -> None:
    now = datetime.now(timezone.utc)
    assert await repo.users.chosen_language(1001) is None  # never seen
    await write_all(repo.db, [LanguageChosen(UserInfo(1001, "ann", "en"), "hinglish", now)])
    assert await repo.users.chosen_language(1001) == "hinglish"
    # Later interactions update the user's details, never their choice.
    await write_all(repo.db, [entry(1), UserStarted(UserInfo(1001, "ann2", "hi"), now)])
    user = await repo.users.get(1001)
    assert (user.chosen_language, user.username, user.language, user.can_dm) == ("hinglish", "ann2", "hi", True)
    await write_all(repo.db, [LanguageChosen(UserInfo(1001, "ann2"), "english", now)])
    assert await repo.users.chosen_language(1001) == "english"
    await write_all(repo.db, [Forget(1001, now)])
    assert await repo.users.chosen_language(1001) is None


async def test_migration_0005_keeps_the_users_and_adds_no_choice(database_url: str) -> None:
    await asyncio.to_thread(upgrade, database_url, "0004")
    database = Database(database_url)
    async with database.engine.begin() as connection:
        await insert_ann(connection)
    await database.close()
    await asyncio.to_thread(upgrade, database_url)
    repo = Repository(Database(database_url))
    user = await repo.users.get(7)
    assert (user.username, user.can_dm, user.chosen_language) == ("ann", True, None)
    await repo.db.close()


async def test_retention_removes_old_texts_and_keeps_counts(repo: Repository) -> None:
    old = datetime.now(timezone.utc) - timedelta(days=100)
    await repo.interactions.log_many([entry(1, created_at=old), entry(2, created_at=old), entry(3)])
    assert await repo.interactions.redact_older_than(datetime.now(timezone.utc) - timedelta(days=90)) == 2
    rows = await repo.interactions.all()
    assert [r.input_text is None for r in rows] == [True, True, False]
    assert [r.top_prediction is None for r in rows] == [True, True, False]
    assert [r.latency_ms for r in rows] == [1.0, 2.0, 3.0]  # counts and timings stay for the statistics


async def test_stats_against_hand_computed_numbers(repo: Repository) -> None:
    now = datetime(2026, 11, 26, 12, 0, tzinfo=timezone.utc)
    day = timedelta(days=1)
    ann, bob, cyd = UserInfo(1, "ann"), UserInfo(2, "bob"), UserInfo(3, "cyd")
    rows = [
        InteractionEntry("guide", ann, trigger="MLM", created_at=now - 0.1 * day),
        InteractionEntry("guide", bob, trigger="start:mlm", created_at=now - 1.1 * day),
        InteractionEntry("comment", cyd, trigger="MLM on -100:7", outcome="button", created_at=now - 2.1 * day),
        InteractionEntry("comment", ann, trigger="mlm on -100:8", outcome="dm", created_at=now - 2.2 * day),
        InteractionEntry(
            "prediction", ann, latency_ms=10, predictions=[[{"token": "mat"}]], created_at=now - 0.2 * day
        ),
        InteractionEntry(
            "prediction", bob, latency_ms=20, predictions=[[{"token": "mat"}]], created_at=now - 0.3 * day
        ),
        InteractionEntry(
            "prediction", bob, latency_ms=30, predictions=[[{"token": "rug"}]], created_at=now - 3.5 * day
        ),
        InteractionEntry(
            "prediction", bob, latency_ms=400, predictions=[[{"token": "floor"}]], created_at=now - 4.5 * day
        ),
        InteractionEntry("prediction", cyd, outcome="rate_limited", created_at=now - 0.4 * day),
        InteractionEntry("inline", cyd, latency_ms=5, predictions=[[{"token": "mat"}]], created_at=now - 0.5 * day),
        InteractionEntry("guide", cyd, trigger="MLM", created_at=now - 30 * day),  # outside the week
        InteractionEntry("prediction", UserInfo(4), latency_ms=999, created_at=now - 8 * day),  # outside too
    ]
    await repo.interactions.log_many(rows)
    totals, users = await repo.interactions.totals()

    async def no_row_loading(start):
        raise AssertionError("/stats must count in SQL, not load the window's rows")

    repo.interactions.since = no_row_loading  # type: ignore[method-assign]
    stats = await gather_stats(repo, days=7, now=now)
    assert stats.guides_sent == 3  # 2 guides + 1 comment answered by DM
    assert stats.predictions == 4 and stats.inline_queries == 1 and stats.comments == 2
    assert stats.unique_users == 3
    assert stats.latency_p50_ms == 20 and stats.latency_p95_ms == 400  # nearest rank of 10, 20, 30, 400
    assert stats.top_keywords == [("MLM", 2), ("deep link", 1), ("mlm", 1)]
    assert stats.top_words == [("mat", 3), ("rug", 1), ("floor", 1)]
    assert totals == {"guide": 3, "comment": 2, "prediction": 6, "inline": 1} and users == 4
    assert len(stats.daily) == 7 and sum(d["prediction"] for d in stats.daily.values()) == 5
    assert stats.daily[now.date()]["guide"] == 1 and stats.daily[(now - 2 * day).date()]["comment"] == 2
    assert stats.languages == {}  # nobody chose yet
    choices = [(1001, "hinglish"), (1002, "hinglish"), (1003, "english"), (1002, "hinglish")]
    await write_all(repo.db, [LanguageChosen(UserInfo(u), language, now) for u, language in choices])
    assert (await gather_stats(repo, days=7, now=now)).languages == {"hinglish": 2, "english": 1}


def test_percentile_is_nearest_rank() -> None:
    assert nearest_rank(1, 95) == 1
    assert nearest_rank(100, 95) == 95
    assert nearest_rank(3, 50) == 2
    assert nearest_rank(4, 50) == 2 and nearest_rank(4, 95) == 4


async def test_postgresql_restarted_in_the_middle_of_a_burst_loses_nothing(repo: Repository, database_url: str) -> None:
    """A real PostgreSQL goes down (a fast stop: connections cut, "shutting down", then "starting up") and comes
    back while the writer has 600 writes to make: every one is written, none twice."""
    import subprocess

    if not database_url.startswith("postgresql"):
        pytest.skip("a PostgreSQL restart")
    writer = InteractionWriter(repo.interactions.log_many, batch_size=5, retry_delay=0.05, max_retry_delay=0.5)
    await writer.start()
    restarting = asyncio.create_task(
        asyncio.to_thread(subprocess.run, [str(CI_POSTGRES), "restart"], capture_output=True, timeout=60)
    )
    for i in range(600):  # a burst that goes on while the server goes down and comes back
        await writer.log(entry(i))
        await asyncio.sleep(0.003)
    done = await restarting
    assert done.returncode == 0, done.stderr
    assert await writer.flush(timeout=60), "the writes wait for the database, then go through"
    await writer.close()
    rows = await repo.interactions.all()
    assert sorted(int(r.latency_ms) for r in rows) == list(range(600))
    assert writer.retries > 0 and writer.dead_letters == 0, "the restart was met, and retried, not refused"


async def test_a_hung_statement_on_postgresql_times_out_and_counts_as_transient(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """asyncpg waits forever by default: one hung connection would freeze the writer and polling. The engine sets
    a command timeout (and a pool timeout), and what it raises is retried, not dead-lettered."""
    from bot.storage import database as database_module
    from bot.storage.writer import is_transient

    if not database_url.startswith("postgresql"):
        pytest.skip("asyncpg's command timeout")
    monkeypatch.setattr(database_module, "COMMAND_TIMEOUT_S", 0.5)
    database = Database(database_url)
    started = time.monotonic()
    with pytest.raises(Exception) as hung:
        async with database.engine.connect() as connection:
            await connection.execute(sa.text("SELECT pg_sleep(5)"))
    await database.close()
    assert time.monotonic() - started < 4 and is_transient(hung.value), repr(hung.value)
    assert database.engine.pool.timeout() == database_module.POOL_TIMEOUT_S
