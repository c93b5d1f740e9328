"""Shared fixtures: tiny random-weight models, built once per session and loaded through the product's own
``FillMaskEngine.load`` (the same ``from_pretrained`` path as bert-base-uncased on a real machine)."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the hub is out of reach in CI: fail fast if anything tries it
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# Engines built from settings in the tests run where the pipeline references do (CPU, fp32), on GPU machines too.
os.environ.setdefault("MODEL_DEVICE", "cpu")

from bot.config import BotSettings
from bot.storage import Repository
from models.bench.random_models import BUILDERS
from models.engine.core import FillMaskEngine
from tests.support.bot_harness import bot_settings, running_bot
from tests.support.fake_telegram import FakeTelegram


@pytest.fixture(params=["sqlite", "postgres"])
async def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh database: an SQLite file, then the PostgreSQL that ``.ci/run`` starts (TEST_POSTGRES_URL) with
    an empty schema, or a skip where there is none."""
    import sqlalchemy as sa
    from sqlalchemy.ext.asyncio import create_async_engine

    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path}/bot.sqlite3"
    postgres = os.environ.get("TEST_POSTGRES_URL")
    if not postgres:
        pytest.skip("no PostgreSQL here: TEST_POSTGRES_URL is not set (.ci/run sets it when it can start one)")
    engine = create_async_engine(postgres)
    async with engine.begin() as connection:  # a clean schema for every test
        await connection.execute(sa.text("DROP SCHEMA public CASCADE"))
        await connection.execute(sa.text("CREATE SCHEMA public"))
    await engine.dispose()
    return postgres


@pytest.fixture(scope="session")
def model_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("models")
    return {kind: BUILDERS[kind](root / kind) for kind in ("bert", "roberta", "distilbert", "albert")}


@pytest.fixture(scope="session")
def bert_dir(model_dirs: dict[str, Path]) -> Path:
    return model_dirs["bert"]


@pytest.fixture(scope="session")
def roberta_dir(model_dirs: dict[str, Path]) -> Path:
    return model_dirs["roberta"]


@pytest.fixture(scope="session")
def bert_engine(bert_dir: Path) -> FillMaskEngine:
    return FillMaskEngine.load(bert_dir, device="cpu")  # pinned: the pipeline references run on CPU fp32


@pytest.fixture(scope="session")
def roberta_engine(roberta_dir: Path) -> FillMaskEngine:
    return FillMaskEngine.load(roberta_dir, device="cpu")


@pytest.fixture(scope="session", params=["bert", "roberta"])
def engine(
    request: pytest.FixtureRequest, bert_engine: FillMaskEngine, roberta_engine: FillMaskEngine
) -> FillMaskEngine:
    return {"bert": bert_engine, "roberta": roberta_engine}[request.param]


@pytest.fixture
async def fake() -> FakeTelegram:
    """The fake Bot API server on 127.0.0.1, for one test; the test fails if the bot sent it anything Telegram
    would refuse."""
    telegram = FakeTelegram()
    async with telegram.running():
        yield telegram
    assert telegram.rejections == [], "the bot sent something Telegram would refuse"


@pytest.fixture
def settings(fake: FakeTelegram, bert_dir: Path, tmp_path: Path) -> BotSettings:
    """The bot's settings for a run against the fake Bot API, with the tiny BERT and an SQLite file in tmp_path."""
    return bot_settings(fake, bert_dir, tmp_path)


@pytest.fixture
async def live_bot_repo(settings: BotSettings, fake: FakeTelegram) -> AsyncIterator[Repository]:
    """Starts the real bot (``mlm-bot run``'s code) against the fake Bot API, for the test's length: its
    database's repository."""
    async with running_bot(settings, fake) as repository:
        yield repository
