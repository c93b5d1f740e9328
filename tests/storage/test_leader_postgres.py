"""The PostgreSQL lock that keeps one bot active, against a real PostgreSQL (and a real PgBouncer in front of it,
where this machine has one): the lock is confirmed by what pg_locks says about the holder's own session, not by
the session answering; a transaction pooler, which would share the lock's session with other clients, is refused
at start-up; the lock's connection is dropped by the server within seconds of going silent; a standby can name
the process that holds the lock."""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url

from bot.config import StartupError
from bot.storage.leader import LOCK_KEY, PostgresLeadership, UnusableLock

POSTGRES_URL = os.environ.get("TEST_POSTGRES_URL")
pytestmark = pytest.mark.skipif(
    not POSTGRES_URL, reason="no PostgreSQL here: TEST_POSTGRES_URL is not set (.ci/run sets it when it can start one)"
)


async def test_the_lock_is_confirmed_by_pg_locks_not_by_a_session_that_answers() -> None:
    """The holder's session still answers ``SELECT 1`` after the lock left it (unlocked by hand here; a pooler's
    other session would look the same). The holder notices, and another process that took the lock keeps it."""
    one, two = PostgresLeadership(POSTGRES_URL), PostgresLeadership(POSTGRES_URL)
    try:
        assert await one.try_acquire() and await one._confirm()
        watching = asyncio.create_task(one.watch())
        assert await one._connection.scalar(text("SELECT pg_advisory_unlock(:key)"), {"key": LOCK_KEY})
        assert await one._connection.scalar(text("SELECT 1")) == 1, "the session answers"
        assert not await one._confirm(), "but the lock is no longer its"
        assert await two.try_acquire()
        await asyncio.wait_for(watching, 15)  # returns: lost
        assert not one.held and two.held
    finally:
        await one.release()
        await two.release()


async def test_the_locks_connection_has_short_keepalives_and_a_tcp_user_timeout() -> None:
    lock = PostgresLeadership(POSTGRES_URL)
    try:
        assert await lock.try_acquire()
        settings = {
            name: await lock._connection.scalar(text(f"SHOW {name}"))
            for name in ("tcp_keepalives_idle", "tcp_user_timeout")
        }
    finally:
        await lock.release()
    assert settings == {"tcp_keepalives_idle": "5", "tcp_user_timeout": "11000"}


async def test_a_standby_names_the_session_that_holds_the_lock() -> None:
    one, two = PostgresLeadership(POSTGRES_URL), PostgresLeadership(POSTGRES_URL)
    try:
        assert await two.holder() is None
        assert await one.try_acquire() and not await two.try_acquire()
        holder = await two.holder()
        pid = await one._connection.scalar(text("SELECT pg_backend_pid()"))
        assert holder is not None and f"session {pid}" in holder and "mlm-bot leader lock" in holder
        await one.release()
        assert await two.holder() is None
    finally:
        await one.release()
        await two.release()


# ----------------------------------------------------------------------------------------------- PgBouncer


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def bouncer() -> Iterator[dict[str, str]]:
    """A real PgBouncer on 127.0.0.1 in front of the test PostgreSQL: the database ``tx`` in transaction mode,
    ``session`` in session mode. Their URLs by mode."""
    program = shutil.which("pgbouncer") or next(iter(Path("/usr/sbin").glob("pgbouncer")), None)
    if program is None:
        pytest.skip("PgBouncer is not installed here (.ci/run installs it when it runs as root)")
    target = make_url(POSTGRES_URL)
    port = _free_port()
    folder = Path(tempfile.mkdtemp(prefix="mlm-bot-pgbouncer."))  # not under pytest's folder: PgBouncer runs as
    folder.chmod(0o777)  # postgres when the tests run as root, and must read its files
    server = f"host={target.host} port={target.port} dbname={target.database} user={target.username}"
    (folder / "users.txt").write_text(f'"{target.username}" ""\n')
    (folder / "pgbouncer.ini").write_text(
        f"[databases]\ntx = {server} pool_mode=transaction\nsession = {server} pool_mode=session\n"
        f"[pgbouncer]\nlisten_addr = 127.0.0.1\nlisten_port = {port}\nauth_type = trust\n"
        f"auth_file = {folder / 'users.txt'}\nunix_socket_dir =\nlogfile = {folder / 'log'}\n"
        f"pidfile = {folder / 'pid'}\n"
    )
    for path in folder.iterdir():
        path.chmod(0o666)
    command = [str(program), str(folder / "pgbouncer.ini")]
    if os.geteuid() == 0:  # PgBouncer will not run as root
        command[1:1] = ["-u", "postgres"]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            break
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                log = (folder / "log").read_text() if (folder / "log").exists() else "no log"
                pytest.skip(f"PgBouncer did not start here: {log[-300:]}")
            time.sleep(0.1)
    base = target.set(host="127.0.0.1", port=port)
    try:
        yield {mode: base.set(database=mode).render_as_string(hide_password=False) for mode in ("tx", "session")}
    finally:
        process.terminate()
        process.wait(10)
        shutil.rmtree(folder, ignore_errors=True)


async def test_a_transaction_pooler_is_refused_and_a_session_pool_works(bouncer: dict[str, str]) -> None:
    pooled = PostgresLeadership(bouncer["tx"])
    try:
        with pytest.raises(UnusableLock, match="transaction mode"):
            await pooled.try_acquire()
        assert not pooled.held
    finally:
        await pooled.release()
    session = PostgresLeadership(bouncer["session"])
    try:
        assert await session.try_acquire() and await session._confirm()
    finally:
        await session.release()


async def test_the_bot_refuses_to_start_behind_a_transaction_pooler(bouncer: dict[str, str], tmp_path: Path) -> None:
    from types import SimpleNamespace

    from bot.runner import serve
    from tests.support.bot_harness import bot_settings

    settings = bot_settings(SimpleNamespace(url="http://127.0.0.1:9/bot"), tmp_path, tmp_path)  # type: ignore[arg-type]
    settings = settings.model_copy(update={"database_url": bouncer["tx"]})
    with pytest.raises(StartupError, match="pool in session mode"):
        await asyncio.wait_for(serve(settings, asyncio.Event()), 30)
