"""``mlm-bot export``: the interaction log as CSV or JSON lines, for the creator's own analysis."""

from __future__ import annotations

import asyncio
import csv
import json
import sys
from datetime import datetime, timedelta, timezone
from typing import Any, TextIO

from bot.storage import Database, Repository
from bot.storage.tables import Interaction

COLUMNS = ("id", "created_at", "user_id", "chat_id", "chat_type", "kind", "trigger", "input_text", "model_name",
           "top_prediction", "predictions", "latency_ms", "outcome", "guide", "post")  # fmt: skip


def as_record(row: Interaction) -> dict[str, Any]:
    record = {column: getattr(row, column) for column in COLUMNS}
    created = record["created_at"]
    record["created_at"] = (created if created.tzinfo else created.replace(tzinfo=timezone.utc)).isoformat()
    return record


# A spreadsheet reads a cell that starts with one of these as a formula (=HYPERLINK(...), +cmd|...): people's
# texts are exported as text, behind an apostrophe, as OWASP's CSV-injection advice says.
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def as_text_cell(value: Any) -> Any:
    if isinstance(value, str) and value.startswith(FORMULA_STARTS):
        return "'" + value
    return value


def write(rows: list[Interaction], out: TextIO, fmt: str) -> None:
    if fmt == "jsonl":
        for row in rows:
            out.write(json.dumps(as_record(row), ensure_ascii=False) + "\n")
        return
    writer = csv.DictWriter(out, fieldnames=COLUMNS)
    writer.writeheader()
    for row in rows:
        record = as_record(row)
        record["predictions"] = json.dumps(record["predictions"], ensure_ascii=False) if record["predictions"] else ""
        writer.writerow({column: as_text_cell(value) for column, value in record.items()})


async def load_rows(url: str, since_days: int | None = None) -> list[Interaction]:
    database = Database(url)
    try:
        await database.require_current()  # read-only: never migrates (SchemaOutOfDate says what to do)
        start = datetime.now(timezone.utc) - timedelta(days=since_days) if since_days else None
        return await Repository(database).interactions.since(start)
    finally:
        await database.close()


def export(url: str, fmt: str, output: str | None, *, since_days: int | None = None) -> int:
    rows = asyncio.run(load_rows(url, since_days))
    if output:
        with open(output, "w", encoding="utf-8", newline="") as out:
            write(rows, out, fmt)
    else:
        write(rows, sys.stdout, fmt)
    return len(rows)
