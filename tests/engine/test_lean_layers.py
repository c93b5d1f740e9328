"""BERT's layers without transformers' per-module Python on CPU (models/engine/accel/lean_layers.py): used where the
structure is known, the pipeline's answers kept, and the model's own layers kept on any difference."""

from __future__ import annotations

import logging
from functools import cache
from pathlib import Path

import pytest
import torch
from transformers import pipeline

from models.bench.random_models import sentences
from models.engine.accel import int8_linear, lean_layers, packed_linear
from models.engine.accel.int8_linear import Int8Linear
from models.engine.accel.lean_layers import LeanLayer
from models.engine.accel.packed_linear import PackedLinear
from models.engine.core import FillMaskEngine
from models.engine.results import FillMaskRequest
from tests.support.hf_compare import assert_same_hf

needs_onednn = pytest.mark.skipif(not packed_linear.available(), reason="this torch has no oneDNN linear ops")


@cache
def reference(model_dir: str):
    return pipeline("fill-mask", model=model_dir, device="cpu")


def layers_of(engine: FillMaskEngine) -> list[torch.nn.Module]:
    return list(engine.forwarder.encoder.encoder.layer)


@needs_onednn
@pytest.mark.parametrize("kind", ["bert", "roberta"])
def test_bert_and_roberta_layers_run_lean_with_the_pipelines_answers(model_dirs: dict[str, Path], kind: str) -> None:
    engine = FillMaskEngine.load(model_dirs[kind], device="cpu", packed_weights=True)
    try:
        layers = layers_of(engine)
        assert engine.forwarder.lean_layers == len(layers) > 0
        assert all(isinstance(layer, LeanLayer) for layer in layers)
        # packed: query, key and value as one packed product; their fp32 layers gone
        assert all(isinstance(layer.qkv, PackedLinear) and layer.query is layer.value is None for layer in layers)
        fill = reference(engine.name)
        texts = [*sentences(3, seed=5, mask=engine.mask_token), f"a {engine.mask_token} ."]
        texts.append(f"the {engine.mask_token} sat on the mat , and the dog ran to the {engine.mask_token} .")
        encoded = engine.prepare_batch([FillMaskRequest(t) for t in texts])  # padded: the mask reaches the layers
        for text, result in zip(texts, engine.postprocess(encoded, engine.run_forward(encoded)), strict=True):
            assert_same_hf(result.to_hf(), fill(text), sequence=text.count(engine.mask_token) == 1)
    finally:
        engine.model_thread.shutdown()


@needs_onednn
@pytest.mark.parametrize("kind", ["distilbert", "albert"])
def test_layers_it_does_not_know_stay_the_models_own(model_dirs: dict[str, Path], kind: str) -> None:
    engine = FillMaskEngine.load(model_dirs[kind], device="cpu", packed_weights=True)
    try:
        assert engine.forwarder.lean_layers == 0
        assert not any(isinstance(m, LeanLayer) for m in engine.model.modules())
    finally:
        engine.model_thread.shutdown()


def test_plain_fp32_on_request_keeps_the_models_own_layers(bert_dir: Path) -> None:
    engine = FillMaskEngine.load(bert_dir, device="cpu", packed_weights=False)
    try:
        assert engine.forwarder.lean_layers == 0 and not isinstance(layers_of(engine)[0], LeanLayer)
    finally:
        engine.model_thread.shutdown()


@pytest.mark.skipif(not int8_linear.available(), reason="this torch has no int8 kernels")
def test_in_int8_the_three_projections_are_one_layer(bert_dir: Path) -> None:
    """One quantization of a layer's input for query, key and value: four int8 products a layer, not six."""
    engine = FillMaskEngine.load(bert_dir, device="cpu", dtype="int8")
    try:
        layers = layers_of(engine)
        assert all(isinstance(layer, LeanLayer) for layer in layers)
        products = [m for layer in layers for m in layer.modules() if isinstance(m, Int8Linear)]
        assert len(products) == 4 * len(layers)
        hidden = layers[0].qkv.out_features
        assert hidden == 3 * layers[0].attention_out.out_features
    finally:
        engine.model_thread.shutdown()


def test_a_lean_layer_that_differs_puts_the_models_own_back(
    bert_dir: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    real = LeanLayer.forward
    monkeypatch.setattr(LeanLayer, "forward", lambda self, hidden, *a, **k: real(self, hidden, *a, **k) * 1.5)
    with caplog.at_level(logging.WARNING, logger=lean_layers.__name__):
        engine = FillMaskEngine.load(bert_dir, device="cpu", packed_weights=True)
    try:
        assert engine.forwarder.lean_layers == 0
        assert not any(isinstance(m, LeanLayer) for m in engine.model.modules())
        assert "model's own layers kept" in caplog.text
        text = f"the cat sat on the {engine.mask_token} ."
        assert_same_hf(engine.fill(text, top_k=5).to_hf(), reference(engine.name)(text, top_k=5))
    finally:
        engine.model_thread.shutdown()


@needs_onednn
def test_packing_that_fails_gives_the_lean_layers_their_three_projections_back(
    bert_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(PackedLinear, "forward", lambda self, x: torch.zeros(*x.shape[:-1], self.out_features))
    engine = FillMaskEngine.load(bert_dir, device="cpu", packed_weights=True)
    try:
        assert engine.packed_layers == 0 and engine.forwarder.lean_layers > 0
        for layer in layers_of(engine):
            assert layer.qkv is None and all(type(p) is torch.nn.Linear for p in (layer.query, layer.key, layer.value))
        text = f"the cat sat on the {engine.mask_token} ."
        assert_same_hf(engine.fill(text, top_k=5).to_hf(), reference(engine.name)(text, top_k=5))
    finally:
        engine.model_thread.shutdown()
