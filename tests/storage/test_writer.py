"""The background writer never freezes the bot: refused writes become dead letters while the rest are
written, flush() is bounded and waits only for what came before it, and /forget is final."""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from bot.storage import Database, Repository
from bot.storage.writer import Forgotten, InteractionWriter, is_transient
from bot.storage.writes import Forget, InteractionEntry, UserInfo, UserStarted, write_all
from tests.support.database import entry, hold_write_lock


@pytest.fixture
async def database(tmp_path: Path):
    db = Database(f"sqlite+aiosqlite:///{tmp_path}/log.sqlite3", busy_timeout_ms=100)
    await db.migrate()
    yield db
    await db.close()


def writer_for(db: Database, **kwargs) -> InteractionWriter:
    return InteractionWriter(
        lambda ops: write_all(db, ops), letters=Repository(db).dead_letters, retry_delay=0.02, **kwargs
    )


async def test_a_refused_write_is_dead_lettered_and_the_rest_are_written(
    database: Database, caplog: pytest.LogCaptureFixture
) -> None:
    writer = writer_for(database, batch_size=50)
    await writer.start()
    bad_value = entry(5, predictions={"not json": object()})  # the driver cannot store it
    bad_null = InteractionEntry(kind=None)  # type: ignore[arg-type] - NOT NULL refuses it
    for op in [*(entry(i) for i in range(5)), bad_value, *(entry(i) for i in range(6, 10)), bad_null, entry(10)]:
        await writer.log(op)
    assert await asyncio.wait_for(writer.flush(timeout=10), 15), "a refused row must not hold up the others"
    rows = await Repository(database).interactions.all()
    assert sorted(int(r.latency_ms) for r in rows) == [0, 1, 2, 3, 4, 6, 7, 8, 9, 10]
    assert writer.dead_letters == 2 and writer.written == 10
    letters = await writer.letters.records()  # in the database, not in a file per host
    assert [letter["type"] for letter in letters] == ["InteractionEntry", "InteractionEntry"]
    assert letters[0]["write"]["latency_ms"] == 5.0 and "IntegrityError" in letters[1]["error"]
    assert not list(Path(database.url.split("///")[1]).parent.glob("*dead-letter*"))
    assert sum(r.levelno == logging.ERROR and "refused" in r.getMessage() for r in caplog.records) == 2
    await writer.log(entry(11))  # and it keeps writing
    assert await writer.flush(timeout=5)
    await writer.close()


@pytest.mark.parametrize(
    ("code", "transient"),
    [
        ("08006", True),  # connection failure
        ("40P01", True),  # deadlock detected
        ("40001", True),  # serialization failure
        ("53300", True),  # too many connections
        ("57P03", True),  # the database system is starting up
        ("57014", True),  # query canceled (a statement or command timeout)
        ("25006", True),  # read-only transaction: a replica after a failover
        ("23505", False),  # unique violation: the data's fault
        ("22001", False),  # value too long
        ("42P01", False),  # undefined table: a bug, not a blip
    ],
)
def test_postgresql_errors_are_transient_by_their_sqlstate(code: str, transient: bool) -> None:
    from sqlalchemy.exc import DBAPIError, IntegrityError, ProgrammingError

    class AsyncpgError(Exception):  # what SQLAlchemy's asyncpg adapter puts in .orig: it carries .sqlstate
        sqlstate = code

    for wrapper in (DBAPIError, IntegrityError, ProgrammingError):
        assert is_transient(wrapper("INSERT ...", {}, AsyncpgError("x"))) is transient, (code, wrapper)


def test_a_pool_timeout_is_transient() -> None:
    from sqlalchemy.exc import TimeoutError as PoolTimeout

    assert is_transient(PoolTimeout("QueuePool limit of size 5 overflow 10 reached"))


def test_only_transient_errors_are_retried() -> None:
    from sqlalchemy.exc import DataError, IntegrityError, OperationalError, StatementError

    assert is_transient(OperationalError("INSERT", {}, Exception("database is locked")))
    assert is_transient(ConnectionRefusedError(111, "Connection refused"))
    assert not is_transient(IntegrityError("INSERT", {}, Exception("NOT NULL constraint failed")))
    assert not is_transient(DataError("INSERT", {}, Exception("value too long")))
    assert not is_transient(StatementError("cannot serialize", "INSERT", {}, TypeError("object")))


async def test_flush_is_bounded_and_waits_only_for_earlier_writes(database: Database, tmp_path: Path) -> None:
    gate = asyncio.Event()
    calls: list[int] = []

    async def slow(ops) -> None:
        calls.append(len(ops))
        if len(calls) > 1:
            await gate.wait()  # every write after the first waits until the test opens the gate
        await write_all(database, ops)

    writer = InteractionWriter(slow, batch_size=1)
    await writer.start()
    await writer.log(entry(0))
    assert await writer.flush(timeout=5)  # the first write went through
    await writer.log(entry(1))
    assert not await writer.flush(timeout=0.2), "flush gives up after its timeout"
    flushing = asyncio.create_task(writer.flush(timeout=5))
    await asyncio.sleep(0)
    for i in range(2, 6):
        await writer.log(entry(i))  # handed over after flush() was called
    gate.set()
    assert await flushing
    await writer.close()
    assert len(await Repository(database).interactions.all()) == 6


async def test_forget_is_final_for_writes_that_started_before_it(database: Database, tmp_path: Path) -> None:
    repo = Repository(database)
    writer = writer_for(database)
    await writer.start()
    user = UserInfo(7, "ann", "en")
    before = datetime.now(timezone.utc) - timedelta(seconds=1)
    await writer.log(InteractionEntry("prediction", user=user, input_text="old", created_at=before))
    await writer.flush()

    # The database is locked: the next writes of Ann wait in the buffer when she asks to be forgotten.
    locked = threading.Event()
    holder = threading.Thread(target=hold_write_lock, args=(tmp_path / "log.sqlite3", 1.0, locked))
    holder.start()
    await asyncio.to_thread(locked.wait)
    await writer.log(InteractionEntry("prediction", user=user, input_text="queued", created_at=before))
    forgotten = asyncio.create_task(writer.forget(7, timeout=10))
    await asyncio.sleep(0.05)
    # A handler that started before /forget finishes after it and hands over its interaction and a Start.
    await writer.log(InteractionEntry("guide", user=user, input_text="in flight", created_at=before))
    await writer.log(UserStarted(user, before))
    assert await forgotten is Forgotten.DONE
    await asyncio.to_thread(holder.join)
    await writer.flush()
    assert [r for r in await repo.interactions.all() if r.user_id == 7] == []
    assert await repo.users.get(7) is None, "the user row must not come back"
    assert writer.dropped_forgotten >= 2  # the in-flight interaction and Start (the queued one may be mid-write)

    # What Ann does after /forget is a new interaction, and is kept.
    await writer.log(InteractionEntry("prediction", user=user, input_text="new", created_at=datetime.now(timezone.utc)))
    await writer.close()
    assert [r.input_text for r in await repo.interactions.all() if r.user_id == 7] == ["new"]


async def test_a_refused_write_logs_no_value_people_sent(database: Database, caplog: pytest.LogCaptureFixture) -> None:
    """SQLAlchemy's errors carry the statement's parameters ([parameters: ...]): the engine hides them, so
    what a person typed reaches neither the log nor the error kept beside the dead letter."""
    from sqlalchemy.exc import IntegrityError

    with pytest.raises(IntegrityError) as refused:  # the whole error, as a traceback would print it
        await write_all(database, [InteractionEntry(kind=None, input_text="my secret sentence")])  # type: ignore[arg-type]
    assert "my secret sentence" not in str(refused.value) and "parameters hidden" in str(refused.value)
    writer = writer_for(database)
    await writer.start()
    await writer.log(InteractionEntry(kind=None, input_text="my secret sentence"))  # type: ignore[arg-type]
    assert await writer.flush(timeout=10)
    await writer.close()
    (record,) = await writer.letters.records()
    assert "IntegrityError" in record["error"] and "my secret sentence" not in record["error"]
    assert "my secret sentence" not in caplog.text and writer.dead_letters == 1


async def test_forget_says_done_only_once_committed_and_failed_if_refused(database: Database) -> None:
    refuse = True

    async def write(ops) -> None:
        if refuse and any(isinstance(op, Forget) for op in ops):
            raise ValueError("the database refused the deletion")  # not transient: dead-lettered
        await write_all(database, ops)

    writer = InteractionWriter(write, letters=Repository(database).dead_letters)
    await writer.start()
    await writer.log(entry(1))  # user 1001
    assert await writer.forget(1001, timeout=10) is Forgotten.FAILED
    assert [r.user_id for r in await Repository(database).interactions.all()] == [1001], "nothing was deleted"
    refuse = False
    assert await writer.forget(1001, timeout=10) is Forgotten.DONE
    assert await Repository(database).interactions.all() == []
    await writer.close()


async def test_forget_is_pending_while_the_database_cannot_answer(database: Database, tmp_path: Path) -> None:
    writer = writer_for(database)
    await writer.start()
    locked = threading.Event()
    holder = threading.Thread(target=hold_write_lock, args=(tmp_path / "log.sqlite3", 1.5, locked))
    holder.start()
    await asyncio.to_thread(locked.wait)
    assert await writer.forget(1001, timeout=0.3) is Forgotten.PENDING  # still written, once it can be
    await asyncio.to_thread(holder.join)
    assert await writer.flush(timeout=10)
    await writer.close()


async def test_forget_removes_the_persons_dead_letters_and_retention_prunes_old_ones(database: Database) -> None:
    writer = writer_for(database)
    await writer.start()
    for user in (1001, 1002):
        await writer.log(InteractionEntry(kind=None, user=UserInfo(user), input_text=f"{user}"))  # type: ignore[arg-type]
    assert await writer.flush(timeout=10)
    assert sorted(r["user_id"] for r in await writer.letters.records()) == [1001, 1002]
    assert await writer.forget(1001, timeout=10) is Forgotten.DONE
    assert [r["user_id"] for r in await writer.letters.records()] == [1002]
    await writer.close()
    assert await writer.letters.prune(datetime.now(timezone.utc) - timedelta(days=1)) == 0, "a recent one stays"
    assert await writer.letters.prune(datetime.now(timezone.utc) + timedelta(seconds=1)) == 1
    assert await writer.letters.records() == []


async def test_an_older_versions_dead_letter_file_is_taken_in_then_deleted(database: Database, tmp_path: Path) -> None:
    """It holds what people typed: in the table, /forget and retention clean it; left as a file, nothing would."""
    old = tmp_path / "log.sqlite3.dead-letter.jsonl"
    old.write_text(
        json.dumps({"failed_at": "2026-12-01T10:00:00+00:00", "error": "DataError", "type": "InteractionEntry",
                    "user_id": 1001, "write": {"input_text": "ann's words"}}) + "\n" + "a line cut short by a crash\n"
    )  # fmt: skip
    letters = Repository(database).dead_letters
    assert await letters.take_in_file(old) == 2
    assert not old.exists()
    records = await letters.records()
    assert records[0]["user_id"] == 1001 and records[0]["write"] == {"input_text": "ann's words"}
    assert records[1]["user_id"] is None and "unreadable" in records[1]["error"]
    assert await letters.take_in_file(old) == 0  # gone: nothing more to take in
    await write_all(database, [Forget(1001, datetime.now(timezone.utc))])
    assert [r["user_id"] for r in await letters.records()] == [None]
