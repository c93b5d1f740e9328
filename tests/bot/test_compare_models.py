"""/compare's models: one that fails to load is not tried again at every comparison (each would wait for it
under the compared models' lock), but after a wait that doubles; the others answer meanwhile."""

from __future__ import annotations

import logging
import socket
from pathlib import Path

import pytest

from bot.compare_models import RETRY_FIRST_S, RETRY_MAX_S, ComparedModels
from models.settings import ModelSettings


async def test_a_model_that_fails_to_load_is_tried_again_after_a_growing_wait(
    bert_dir: Path, monkeypatch: pytest.MonkeyPatch, unreachable_hub: str
) -> None:
    """The hub out of reach (it may come back; a folder may still be copied in): tried again after 30 s, then
    twice as long each time."""
    now = [0.0]
    missing = "nobody/not-cached-anywhere"
    compared = ComparedModels([str(bert_dir), missing], ModelSettings(model_device="cpu"), clock=lambda: now[0])
    try:
        rows = await compared.compare("The cat sat on the [MASK].")
        assert [r.error for r in rows] == [None, "model_failed"] and rows[0].masks
        assert compared.load_attempts == 2
        for _ in range(5):  # a burst of comparisons: no new attempt
            await compared.compare("The cat sat on the [MASK].")
        assert compared.load_attempts == 2
        now[0] += RETRY_FIRST_S + 1
        await compared.compare("The cat sat on the [MASK].")
        assert compared.load_attempts == 3, "tried again once the wait is over"
        now[0] += RETRY_FIRST_S + 1  # the wait doubled: not yet
        await compared.compare("The cat sat on the [MASK].")
        assert compared.load_attempts == 3
        now[0] += RETRY_FIRST_S
        await compared.compare("The cat sat on the [MASK].")
        assert compared.load_attempts == 4
    finally:
        await compared.close()


@pytest.fixture
def unreachable_hub(monkeypatch: pytest.MonkeyPatch) -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        endpoint = f"http://127.0.0.1:{s.getsockname()[1]}"  # closed once the socket goes: refused at once
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setenv("HF_ENDPOINT", endpoint)
    for proxy in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(proxy, raising=False)
    return endpoint


async def test_a_model_that_can_never_load_is_named_by_its_setting_and_not_tried_again(
    bert_dir: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Not in the local cache, and HF_HUB_OFFLINE=1 (which does not change while the bot runs): waiting will not
    bring it. The log names COMPARE_MODELS (not the bot's MODEL_NAME) and says it stays out; no comparison waits
    for it again."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    now = [0.0]
    missing = "nobody/not-cached-anywhere"
    compared = ComparedModels([str(bert_dir), missing], ModelSettings(model_device="cpu"), clock=lambda: now[0])
    try:
        with caplog.at_level(logging.ERROR, logger="bot.compare_models"):
            rows = await compared.compare(SENTENCE)
        assert [r.error for r in rows] == [None, "model_failed"]
        (line,) = [r.getMessage() for r in caplog.records if r.name == "bot.compare_models"]
        assert f"COMPARE_MODELS={missing} is not in the local Hugging Face cache" in line and "MODEL_NAME" not in line
        assert "stays out of /compare until the setting changes" in line
        now[0] += 10 * RETRY_MAX_S
        await compared.compare(SENTENCE)
        assert compared.load_attempts == 2, "never tried again"
    finally:
        await compared.close()


SENTENCE = "The cat sat on the [MASK]."


async def test_the_compare_models_stay_within_their_memory_budget(model_dirs: dict[str, Path]) -> None:
    """Measured sizes (fp32, packed): bert 128 KB, roberta 173 KB, albert 65 KB. 0.3 MB holds the first two."""
    names = [str(model_dirs[k]) for k in ("bert", "roberta", "albert")]
    compared = ComparedModels(names, ModelSettings(model_device="cpu"), memory_mb=0.3)
    try:
        rows = await compared.compare(SENTENCE)
        assert [r.error for r in rows] == [None, None, "compare_memory"]
        assert rows[0].masks and rows[1].masks and rows[2].details == {"limit": 0}
        assert 0 < compared.loaded_bytes <= compared.memory_bytes
        assert compared.load_attempts == 2, "the one that could not fit was never loaded"
        for _ in range(3):  # the same models answer every time: nothing loaded or closed again
            assert [r.error for r in await compared.compare(SENTENCE)] == [None, None, "compare_memory"]
        assert compared.load_attempts == 2 and compared.evictions == 0 and compared.loaded
    finally:
        await compared.close()
    unlimited = ComparedModels(names, ModelSettings(model_device="cpu"), memory_mb=0)
    try:
        assert [r.error for r in await unlimited.compare(SENTENCE)] == [None, None, None]
    finally:
        await unlimited.close()


async def test_room_is_made_by_closing_the_least_recently_used_model(
    model_dirs: dict[str, Path], tmp_path: Path
) -> None:
    """A model earlier in COMPARE_MODELS that comes back (it failed to load, now it can) takes the place of
    the loaded ones after it, least recently used first; the budget holds throughout."""
    import shutil

    now = [0.0]
    late = tmp_path / "late-roberta"
    names = [str(late), str(model_dirs["bert"]), str(model_dirs["albert"])]
    compared = ComparedModels(names, ModelSettings(model_device="cpu"), memory_mb=0.32, clock=lambda: now[0])
    try:
        assert [r.error for r in await compared.compare(SENTENCE)] == ["model_failed", None, None]
        shutil.copytree(model_dirs["roberta"], late)
        now[0] += RETRY_FIRST_S + 1
        rows = await compared.compare(SENTENCE)
        assert [r.error for r in rows] == [None, None, "compare_memory"]
        assert compared.evictions >= 1 and compared.loaded_bytes <= compared.memory_bytes
        assert rows[0].label == "RoBERTa" and rows[1].label == "BERT"
    finally:
        await compared.close()


async def test_the_bots_own_model_is_not_loaded_twice(bert_dir: Path, model_dirs: dict[str, Path]) -> None:
    from models.serving.client import LocalFillMask

    main = LocalFillMask(ModelSettings(model_name=str(bert_dir), model_device="cpu"))
    await main.start()
    compared = ComparedModels([f"{bert_dir}/", str(model_dirs["albert"])], ModelSettings(model_device="cpu"), main=main)
    try:
        rows = await compared.compare(SENTENCE)
        assert [r.error for r in rows] == [None, None] and rows[0].label == "BERT"
        assert compared.load_attempts == 1, "only ALBERT was loaded"
    finally:
        await compared.close()
        await main.close()


def test_a_legacy_hub_id_is_the_same_model_as_its_organisations_copy() -> None:
    from bot.compare_models import same_model

    assert same_model("bert-base-uncased", "google-bert/bert-base-uncased")
    assert same_model("google-bert/bert-base-uncased", "bert-base-uncased")
    assert same_model("/models/bert/", "/models/bert")
    assert not same_model("bert-base-uncased", "google-bert/bert-base-cased")
    assert not same_model("bert-base-uncased", "./x/bert-base-uncased")
    assert not same_model("roberta-base", "distilbert/distilbert-base-uncased")
