"""The dead-letter file: writes the database refused, one JSON object a line, beside the database.

Kept for the operator to look at (and replay by hand), never forever and never after /forget: each record
names the person it is about (``user_id``), so ``remove_user`` can drop theirs, and ``prune`` drops records older
than the retention period. Both rewrite the file whole into a temporary file and rename it over the old one, so a
crash mid-way leaves the old file or the new one, never half of either. Blocking file work: call it in a thread.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from sqlalchemy.engine import make_url


class DeadLetters:
    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()  # the writer appends, /forget and the retention job rewrite

    def append(self, record: dict[str, Any]) -> None:
        line = json.dumps(record, default=str, ensure_ascii=False) + "\n"
        with self._lock:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self.path.open("a", encoding="utf-8") as out:
                out.write(line)

    def records(self) -> list[dict[str, Any]]:
        with self._lock:
            return [record for _, record in self._read()]

    def remove_user(self, user_id: int) -> int:
        """Drop every record about ``user_id``; returns how many."""
        return self._keep_only(lambda record: record.get("user_id") != user_id)

    def prune(self, cutoff: datetime) -> int:
        """Drop the records written before ``cutoff``; returns how many."""
        return self._keep_only(lambda record: _failed_at(record) >= cutoff)

    def _read(self) -> list[tuple[str, dict[str, Any]]]:
        if not self.path.exists():
            return []
        out = []
        for line in self.path.read_text(encoding="utf-8").splitlines():
            try:
                record = json.loads(line)
            except ValueError:
                record = {}  # a line cut short by a crash: kept as it is, never guessed at
            out.append((line, record if isinstance(record, dict) else {}))
        return out

    def _keep_only(self, keep: Callable[[dict[str, Any]], bool]) -> int:
        with self._lock:
            lines = self._read()
            kept = [line for line, record in lines if keep(record)]
            if len(kept) == len(lines):
                return 0
            temporary = self.path.with_name(self.path.name + ".tmp")
            with temporary.open("w", encoding="utf-8") as out:
                out.writelines(line + "\n" for line in kept)
                out.flush()
                os.fsync(out.fileno())
            os.replace(temporary, self.path)
            return len(lines) - len(kept)


def _failed_at(record: dict[str, Any]) -> datetime:
    try:
        return datetime.fromisoformat(str(record["failed_at"]))
    except (KeyError, ValueError):
        return datetime.max.replace(tzinfo=timezone.utc)  # unreadable: kept (the operator decides)


def dead_letter_path_for(database_url: str) -> Path:
    """Beside the SQLite file (``log.sqlite3.dead-letter.jsonl``), else ``data/dead-letter.jsonl``."""
    parsed = make_url(database_url)
    if parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:"):
        return Path(parsed.database).resolve().with_name(Path(parsed.database).name + ".dead-letter.jsonl")
    return Path("data", "dead-letter.jsonl").resolve()
