"""oneDNN-packed linear layers on CPU (models/engine/accel/packed_linear.py): the pipeline's numbers, and a safe
way back."""

from __future__ import annotations

import gc
import logging
from functools import cache
from pathlib import Path

import pytest
import torch
from torch import nn
from transformers import pipeline

from models.bench.random_models import sentences
from models.engine.accel import lean_layers, packed_linear
from models.engine.accel.packed_linear import PackedLinear, pack_linears, unpack
from models.engine.core import FillMaskEngine
from models.engine.results import FillMaskRequest
from tests.support.hf_compare import assert_same_hf

needs_onednn = pytest.mark.skipif(not packed_linear.available(), reason="this torch has no oneDNN linear ops")


@cache
def reference(model_dir: str):
    return pipeline("fill-mask", model=model_dir, device="cpu")


def linears(module: nn.Module) -> list[nn.Module]:
    return [m for m in module.modules() if isinstance(m, (nn.Linear, PackedLinear))]


@needs_onednn
@pytest.mark.parametrize("kind", ["bert", "roberta", "distilbert", "albert"])
def test_packed_engine_gives_the_pipelines_answers(model_dirs: dict[str, Path], kind: str) -> None:
    engine = FillMaskEngine.load(model_dirs[kind], device="cpu", packed_weights=True)
    layers = linears(engine.forwarder.encoder)
    assert engine.packed_layers > 0 and layers and all(isinstance(m, PackedLinear) for m in layers)
    fill = reference(engine.name)
    one = sentences(4, seed=3, mask=engine.mask_token)
    for text in one:
        assert_same_hf(engine.fill(text, top_k=5).to_hf(), fill(text, top_k=5))
    # A padded batch of different lengths and a sentence with two masks, through the batched forward.
    texts = [*one, "the [MASK] sat on the mat , and the dog ran to the [MASK] ."]
    texts = [t.replace("[MASK]", engine.mask_token) for t in texts] + [f"a {engine.mask_token} ."]
    encoded = engine.prepare_batch([FillMaskRequest(t) for t in texts])
    for text, result in zip(texts, engine.postprocess(encoded, engine.run_forward(encoded)), strict=True):
        # (the pipeline's sequences for several masks keep [CLS]/[SEP]: the engine's drop them on purpose)
        assert_same_hf(result.to_hf(), fill(text), sequence=text.count(engine.mask_token) == 1)
    engine.model_thread.shutdown()


@needs_onednn
def test_auto_packs_on_x86_only_and_zero_never_packs(bert_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(packed_linear.platform, "machine", lambda: "x86_64")
    auto = FillMaskEngine.load(bert_dir, device="cpu")
    assert auto.packed_layers == len(linears(auto.forwarder.encoder)) > 0
    off = FillMaskEngine.load(bert_dir, device="cpu", packed_weights=False)
    assert off.packed_layers == 0 and all(type(m) is nn.Linear for m in linears(off.forwarder.encoder))
    monkeypatch.setattr(packed_linear.platform, "machine", lambda: "aarch64")  # not measured there: ask for it
    arm = FillMaskEngine.load(bert_dir, device="cpu")
    assert arm.packed_layers == 0 and all(type(m) is nn.Linear for m in linears(arm.forwarder.encoder))
    asked = FillMaskEngine.load(bert_dir, device="cpu", packed_weights=True)
    assert asked.packed_layers > 0
    for engine in (auto, off, arm, asked):
        engine.model_thread.shutdown()


@needs_onednn
def test_packed_layers_that_disagree_with_eager_are_put_back(
    bert_dir: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    engine = FillMaskEngine.load(bert_dir, device="cpu", packed_weights=False)
    plain = linears(engine.forwarder.encoder)
    # The packing alone (the lean layers have their own put-back test, tests/engine/test_lean_layers.py)
    monkeypatch.setattr(lean_layers, "make_lean", lambda encoder: [])
    monkeypatch.setattr(PackedLinear, "forward", lambda self, x: torch.zeros(*x.shape[:-1], self.out_features))
    engine.packed_weights_requested = True
    with caplog.at_level(logging.WARNING, logger="models.engine.forward"):
        engine.warm_up()
    assert engine.packed_layers == 0 and "packed weights could not be used" in caplog.text
    assert linears(engine.forwarder.encoder) == plain  # the very same layers, not copies
    text = "the cat sat on the [MASK] ."
    assert_same_hf(engine.fill(text).to_hf(), reference(engine.name)(text))
    engine.model_thread.shutdown()


def test_a_layer_that_cannot_be_packed_puts_back_the_ones_already_packed(monkeypatch: pytest.MonkeyPatch) -> None:
    model = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 4), nn.Linear(4, 2))
    before = list(model)
    made = []

    def flaky(self: PackedLinear, linear: nn.Linear) -> None:
        if len(made) == 2:
            raise RuntimeError("mkldnn_reorder_linear_weight: this CPU cannot")
        made.append(linear)
        nn.Module.__init__(self)

    monkeypatch.setattr(PackedLinear, "__init__", flaky)
    with pytest.raises(RuntimeError, match="this CPU cannot"):
        pack_linears(model)
    assert list(model) == before


@needs_onednn
def test_a_layer_used_twice_is_packed_once_and_unpack_restores_it() -> None:
    torch.manual_seed(0)
    shared, subclassed = nn.Linear(8, 8), type("MyLinear", (nn.Linear,), {})(8, 8)
    model = nn.Sequential(shared, nn.GELU(), shared, subclassed)
    x = torch.randn(3, 5, 8)
    with torch.inference_mode():
        eager = model(x)
        swapped = pack_linears(model)
        packed = model(x)
    assert isinstance(model[0], PackedLinear) and model[0] is model[2]
    assert model[3] is subclassed  # a subclass may do more than a product: left alone
    assert len(swapped) == 2 and (packed - eager).abs().max().item() < 1e-5
    unpack(swapped)
    assert list(model) == [shared, model[1], shared, subclassed]


def test_packed_weights_setting_is_auto_unless_set(monkeypatch: pytest.MonkeyPatch) -> None:
    from models.settings import ModelSettings

    monkeypatch.delenv("MODEL_PACKED_WEIGHTS", raising=False)
    assert ModelSettings().model_packed_weights is None
    for value, expected in (("auto", None), ("", None), ("1", True), ("on", True), ("0", False), ("false", False)):
        monkeypatch.setenv("MODEL_PACKED_WEIGHTS", value)
        assert ModelSettings().model_packed_weights is expected


@needs_onednn
@pytest.mark.parametrize(("value", "packed"), [("auto", True), ("0", False)])
def test_worker_and_bot_take_the_setting_from_the_environment(
    bert_dir: Path, monkeypatch: pytest.MonkeyPatch, value: str, packed: bool
) -> None:
    from models.serving.client import engine_from
    from models.settings import ModelSettings

    monkeypatch.setattr(packed_linear.platform, "machine", lambda: "x86_64")
    monkeypatch.setenv("MODEL_PACKED_WEIGHTS", value)
    try:
        engine = engine_from(ModelSettings(model_name=str(bert_dir), model_device="cpu"))
    finally:
        gc.unfreeze()  # engine_from freezes the heap for a worker's lifetime; this process goes on testing
    assert (engine.packed_layers > 0) is packed
    engine.model_thread.shutdown()


def test_the_packed_layers_run_a_few_dozen_shapes_whatever_the_batches() -> None:
    """oneDNN keeps a primitive (and its memory) for every shape it runs: the rows of each product are rounded up
    to a few dozen sizes, so a bot that sees every batch shape does not grow with them (benchmarks/soak.py)."""
    from models.engine.accel.packed_linear import bucket_rows

    sizes = {bucket_rows(rows) for rows in range(1, 32 * 128 + 1)}  # up to 32 sentences of 128 tokens
    assert len(sizes) <= 64
    assert all(rows <= bucket_rows(rows) <= rows + max(15, rows // 8) for rows in range(1, 32 * 128 + 1))
    # one chat sentence (up to 32 tokens) runs with at most 3 rows of zeros: at those sizes time follows the rows
    assert all(rows <= bucket_rows(rows) <= rows + 3 for rows in range(1, 33)) and bucket_rows(12) == 12


def test_padded_rows_change_no_row_of_the_result() -> None:
    torch.manual_seed(0)
    linear = torch.nn.Linear(32, 48)
    packed = PackedLinear(linear)
    for shape in [(1, 1, 32), (3, 7, 32), (5, 29, 32), (130, 32)]:  # rows 1, 21, 145, 130: all padded
        x = torch.randn(*shape)
        assert packed(x).shape == (*shape[:-1], 48)
        torch.testing.assert_close(packed(x), linear(x), rtol=1e-5, atol=1e-5)


@needs_onednn
def test_with_gelu_the_product_is_erfs_gelu_of_the_linear_layer_padded_or_not() -> None:
    torch.manual_seed(0)
    linear = torch.nn.Linear(32, 48)
    packed, with_gelu = PackedLinear(linear), PackedLinear(linear, gelu=True)
    wide = torch.randn(7, 2, 32)
    for x in [torch.randn(2, 6, 32), torch.randn(3, 7, 32), wide.transpose(0, 1)]:  # 12 rows as they are, 21 padded
        with torch.inference_mode():
            torch.testing.assert_close(with_gelu(x), torch.nn.functional.gelu(linear(x)), rtol=1e-5, atol=1e-5)
            torch.testing.assert_close(packed(x), linear(x), rtol=1e-5, atol=1e-5)
    assert "gelu=True" in repr(with_gelu) and "gelu=False" in repr(packed)
