"""What leaves the bot besides its answers carries no one's words by accident: CSV exports cannot run formulas a
person typed, and python-telegram-bot's update dumps stay out of the log unless asked for on purpose."""

from __future__ import annotations

import csv
import io
import logging
from datetime import datetime, timezone

import pytest

from bot.export import write
from bot.logs import quiet_libraries
from bot.storage.tables import Interaction


@pytest.mark.parametrize("typed", ["=HYPERLINK(\"http://x\",\"y\")", "+1+cmd|' /C calc'!A0", "-2+3", "@SUM(A1)",
                                   "\tlooks empty", "\r=1"])  # fmt: skip
def test_a_csv_cell_that_a_spreadsheet_would_run_is_written_as_text(typed: str) -> None:
    row = Interaction(
        id=1, created_at=datetime.now(timezone.utc), user_id=5, chat_id=5, chat_type="private", kind="prediction",
        trigger=typed, input_text=typed, model_name="bert", top_prediction=typed, predictions=None, latency_ms=1.0,
        outcome="ok",
    )  # fmt: skip
    out = io.StringIO()
    write([row], out, "csv")
    (record,) = list(csv.DictReader(io.StringIO(out.getvalue())))
    for column in ("trigger", "input_text", "top_prediction"):
        assert record[column] == "'" + typed, column  # shown as typed, never evaluated
    assert record["outcome"] == "ok" and record["user_id"] == "5"


def test_an_ordinary_sentence_is_exported_as_it_is() -> None:
    row = Interaction(id=2, created_at=datetime.now(timezone.utc), kind="guide", input_text="MLM please", outcome="ok")
    out = io.StringIO()
    write([row], out, "csv")
    (record,) = list(csv.DictReader(io.StringIO(out.getvalue())))
    assert record["input_text"] == "MLM please"


@pytest.fixture
def library_levels():
    names = ("telegram", "httpx", "httpcore", "aiosqlite")
    saved = {name: logging.getLogger(name).level for name in names}
    yield
    for name, level in saved.items():
        logging.getLogger(name).setLevel(level)


def test_at_debug_the_libraries_that_log_peoples_words_stay_at_info(library_levels) -> None:
    for name in ("telegram", "aiosqlite"):
        logging.getLogger(name).setLevel(logging.NOTSET)  # as a fresh process at LOG_LEVEL=DEBUG has them
    quiet_libraries(log_updates=False)
    assert not logging.getLogger("telegram.ext.Application").isEnabledFor(logging.DEBUG)
    assert not logging.getLogger("aiosqlite").isEnabledFor(logging.DEBUG)
    assert not logging.getLogger("httpx").isEnabledFor(logging.INFO), "its INFO lines hold the token"
    quiet_libraries(log_updates=True)  # LOG_UPDATES=1, on purpose
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.DEBUG)
    try:
        assert logging.getLogger("telegram.ext.Application").isEnabledFor(logging.DEBUG)
        assert not logging.getLogger("httpx").isEnabledFor(logging.INFO), "never the token, even then"
    finally:
        root.setLevel(level)
