"""Dead letters: writes the database refused (a constraint, a value it cannot store), kept in the database itself,
in the ``dead_letters`` table, for the operator to look at and replay by hand.

In the database, not in a file beside it: with PostgreSQL and the bot on two hosts, a file was per host (``/forget``
cleaned one of them), and two processes rewrote one file through the same temporary name. The refusal is of the
write's own values, which the dead letter holds as JSON text, so the database takes the letter where it refused the
write. Each letter names the person it is about (``user_id``): ``/forget`` deletes theirs with the rest of their
rows (``bot.storage.repository._forget``), and retention drops letters older than its period. A dead-letter file
left by an older version is taken into the table at start-up, then deleted.
"""

from __future__ import annotations

import asyncio
import json
import logging
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.engine import make_url

from bot.storage.database import Database
from bot.storage.tables import DeadLetter

log = logging.getLogger(__name__)


class DeadLetters:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def add(self, record: dict[str, Any]) -> None:
        """One refused write: ``failed_at``, ``error``, ``type``, ``user_id`` and the ``write`` itself."""
        async with self._db.sessions.begin() as session:
            session.add(_row(record))

    async def records(self) -> list[dict[str, Any]]:
        async with self._db.sessions() as session:
            rows = (await session.scalars(select(DeadLetter).order_by(DeadLetter.id))).all()
        return [
            {
                "failed_at": row.failed_at.isoformat(), "error": row.error, "type": row.type,
                "user_id": row.user_id, "write": json.loads(row.payload),
            }
            for row in rows
        ]  # fmt: skip

    async def prune(self, cutoff: datetime) -> int:
        """Drop the letters written before ``cutoff``; returns how many."""
        async with self._db.sessions.begin() as session:
            result = await session.execute(delete(DeadLetter).where(DeadLetter.failed_at < cutoff))
            return int(result.rowcount or 0)

    async def take_in_file(self, path: Path) -> int:
        """An older version's dead-letter file (JSON lines): its records into the table, then the file deleted (it
        holds what people typed; the table is what /forget and retention clean). Returns how many."""
        try:
            lines = (await asyncio.to_thread(path.read_text, encoding="utf-8")).splitlines()
        except FileNotFoundError:
            return 0
        records = []
        for line in lines:
            try:
                record = json.loads(line)
            except ValueError:
                record = {"error": "unreadable line of the old dead-letter file", "write": line}
            records.append(record if isinstance(record, dict) else {"write": record})
        if records:
            async with self._db.sessions.begin() as session:
                session.add_all([_row(record) for record in records])
        await asyncio.to_thread(path.unlink)
        log.info("took %d dead letters from %s into the database, and deleted the file", len(records), path)
        return len(records)


def _row(record: dict[str, Any]) -> DeadLetter:
    user_id = record.get("user_id")
    return DeadLetter(
        failed_at=_failed_at(record),
        error=str(record.get("error") or "")[:500],
        type=str(record.get("type") or "unknown")[:64],
        user_id=user_id if isinstance(user_id, int) else None,
        payload=json.dumps(record.get("write"), default=str),
    )


def _failed_at(record: dict[str, Any]) -> datetime:
    try:
        when = datetime.fromisoformat(str(record["failed_at"]))
    except (KeyError, ValueError):
        return datetime.now(timezone.utc)
    return when if when.tzinfo else when.replace(tzinfo=timezone.utc)


def dead_letter_path_for(database_url: str) -> Path:
    """Where an older version kept its dead-letter file: beside the SQLite file (``log.sqlite3.dead-letter.jsonl``),
    else ``data/dead-letter.jsonl``."""
    parsed = make_url(database_url)
    if parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:"):
        return Path(parsed.database).resolve().with_name(Path(parsed.database).name + ".dead-letter.jsonl")
    return Path("data", "dead-letter.jsonl").resolve()
