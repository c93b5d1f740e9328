"""Fixtures of the bot's tests."""

from __future__ import annotations

import logging

import pytest

from tests.support.fake_telegram import TOKEN


@pytest.fixture
def no_token_in_logs(caplog: pytest.LogCaptureFixture):
    """Everything logged while the test ran, at DEBUG, holds neither the token nor its secret half."""
    caplog.set_level(logging.DEBUG)
    yield
    assert TOKEN not in caplog.text
    assert TOKEN.split(":")[1] not in caplog.text
