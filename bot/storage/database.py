"""The async engine, SQLite's settings, and applying Alembic migrations (start-up and ``mlm-bot db upgrade``)."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import event, text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine

log = logging.getLogger(__name__)

MIGRATIONS = "bot:migrations"  # a package resource: found in a source checkout and in an installed wheel alike


def alembic_config(url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", MIGRATIONS)
    config.attributes["database_url"] = url  # not set_main_option: a % in a password would break it
    return config


def upgrade(url: str, revision: str = "head") -> None:
    """Bring the schema to ``revision``. Synchronous (Alembic runs its own event loop): call it in a thread."""
    _ensure_sqlite_folder(url)
    command.upgrade(alembic_config(url), revision)


class SchemaOutOfDate(Exception):
    """The database's schema is not this version's: a read-only command says so instead of migrating it (only
    ``mlm-bot run``, under the active process's lock, and ``mlm-bot db upgrade`` change the schema)."""


def _ensure_sqlite_folder(url: str) -> None:
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:"):
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)


COMMAND_TIMEOUT_S = 30.0  # one statement on PostgreSQL, at most: a hung connection must not freeze the writer
POOL_TIMEOUT_S = 10.0  # waiting for a free connection, at most


def create_engine(url: str, *, busy_timeout_ms: int = 5000) -> AsyncEngine:
    _ensure_sqlite_folder(url)
    options: dict = {}
    if make_url(url).get_backend_name() == "postgresql":
        options["connect_args"] = {"command_timeout": COMMAND_TIMEOUT_S}  # asyncpg has none by default
        options["pool_timeout"] = POOL_TIMEOUT_S
    # hide_parameters: an error's text (logged, dead-lettered) never carries the values people sent.
    engine = create_async_engine(url, pool_pre_ping=True, hide_parameters=True, **options)
    if engine.dialect.name == "sqlite":

        def pragmas(dbapi_connection, connection_record) -> None:
            """WAL lets readers and the writer work at once; foreign keys are off in SQLite unless asked for;
            the busy timeout makes a briefly locked database wait instead of failing at once; secure_delete
            overwrites what is deleted with zeros (else /forget's rows would stay readable in the file's free
            pages)."""
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA secure_delete=ON")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute(f"PRAGMA busy_timeout={int(busy_timeout_ms)}")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.close()

        event.listen(engine.sync_engine, "connect", pragmas)
    return engine


class Database:
    """Owns the engine and the session factory for the life of the bot."""

    def __init__(self, url: str, *, busy_timeout_ms: int = 5000) -> None:
        self.url = url
        self.engine = create_engine(url, busy_timeout_ms=busy_timeout_ms)
        self.sessions = async_sessionmaker(self.engine, expire_on_commit=False, class_=AsyncSession)

    async def migrate(self) -> None:
        await asyncio.to_thread(upgrade, self.url)

    async def scrub(self) -> bool:
        """After a deletion that must leave no trace (/forget): SQLite's write-ahead log still holds the deleted
        rows' old pages until it is checkpointed and cut to nothing. False if readers kept it from being cut now
        (the next /forget, or SQLite's own checkpoints, do it later). Nothing to do on PostgreSQL."""
        if self.engine.dialect.name != "sqlite":
            return True
        async with self.engine.connect() as connection:
            busy, _, _ = (await connection.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")).one()
        return not busy

    async def require_current(self) -> None:
        """Raise :class:`SchemaOutOfDate`, saying what to do, unless the schema is at this version's head."""
        scripts = ScriptDirectory.from_config(alembic_config(self.url))
        head = scripts.get_current_head()
        async with self.engine.connect() as connection:
            current = await connection.run_sync(lambda c: MigrationContext.configure(c).get_current_revision())
        where = make_url(self.url).render_as_string(hide_password=True)
        if current == head:
            return
        if current is None:
            problem = "has no tables yet: run `mlm-bot db upgrade` (or start the bot)"
        elif current not in {script.revision for script in scripts.walk_revisions()}:
            problem = (
                f"is at revision {current}, newer than this version of mlm-bot knows: use the version that wrote it"
            )
        else:
            problem = (
                f"is older than this version (revision {current}; this one needs {head}): run `mlm-bot db upgrade`"
            )
        raise SchemaOutOfDate(f"the database {where} {problem}")

    async def ping(self) -> None:
        """One round trip to the database (raises if it cannot be reached)."""
        async with self.engine.connect() as connection:
            await connection.execute(text("SELECT 1"))

    async def close(self) -> None:
        await self.engine.dispose()
