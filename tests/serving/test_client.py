"""The bot's one interface to the model: in-process by default, the remote worker when MODEL_WORKER_URL is set."""

from __future__ import annotations

import gc

import pytest

from models.engine.core import FillMaskEngine
from models.engine.errors import ModelNotReadyError, NoMaskError
from models.serving.client import LocalFillMask, RemoteFillMask, create_fill_mask_service
from models.settings import ModelSettings
from tests.support.hf_compare import assert_same_hf


def test_worker_url_selects_the_remote_client(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MODEL_WORKER_URL", "http://gpu-box:8000/v1/fill-mask")
    service = create_fill_mask_service(ModelSettings())
    assert isinstance(service, RemoteFillMask) and service.base_url == "http://gpu-box:8000"
    monkeypatch.setenv("MODEL_WORKER_URL", "  ")
    assert isinstance(create_fill_mask_service(ModelSettings()), LocalFillMask)


async def test_local_service_loads_the_model_off_the_event_loop_and_answers(
    bert_dir, bert_engine: FillMaskEngine
) -> None:
    service = LocalFillMask(ModelSettings(model_name=str(bert_dir)))
    with pytest.raises(ModelNotReadyError):
        await service.fill_mask("the [MASK] sat .")
    gc.unfreeze()
    await service.start()
    try:
        # What start-up loaded is frozen out of the garbage collector's full collections (models/engine/accel/heap.py).
        assert gc.get_freeze_count() > 10_000
        assert service.mask_token == "[MASK]"
        result = await service.fill_mask("the cat sat on the [MASK] .", top_k=3)
        assert_same_hf(result.to_hf(), bert_engine.fill("the cat sat on the [MASK] .", top_k=3).to_hf())
        joint = await service.fill_joint("the [MASK] sat on the [MASK] .")
        assert joint.sequence == bert_engine.fill_joint("the [MASK] sat on the [MASK] .").sequence
        with pytest.raises(NoMaskError):
            await service.fill_mask("no mask")
    finally:
        await service.close()
        gc.unfreeze()
