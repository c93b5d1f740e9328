"""Shared test helpers (database)."""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path

from bot.storage.writes import InteractionEntry, UserInfo


def entry(i: int, kind: str = "prediction", **fields: object) -> InteractionEntry:
    values: dict = {
        "user": UserInfo(1000 + i % 37, f"user{i % 37}", "en"),
        "chat_id": 1000 + i % 37,
        "chat_type": "private",
        "input_text": f"sentence {i} with [MASK]",
        "predictions": [[{"token": f"w{i % 5}", "score": 0.5}]],
        "latency_ms": float(i),
    }
    values.update(fields)
    return InteractionEntry(kind=kind, **values)


def hold_write_lock(path: Path, seconds: float, locked: threading.Event) -> None:
    """Another process's connection holding SQLite's write lock."""
    connection = sqlite3.connect(path, timeout=10)
    connection.execute("BEGIN EXCLUSIVE")
    locked.set()
    time.sleep(seconds)
    connection.rollback()
    connection.close()
