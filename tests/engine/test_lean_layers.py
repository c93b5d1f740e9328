"""BERT's layers without transformers' per-module Python on CPU (models/engine/accel/lean_layers.py): used where the
structure is known, the pipeline's answers kept, and the model's own layers kept on any difference."""

from __future__ import annotations

import json
import logging
import shutil
from functools import cache
from pathlib import Path

import pytest
import torch
from transformers import AutoTokenizer, ElectraConfig, ElectraForMaskedLM, pipeline

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
        # erf's GELU inside the packed intermediate product, and the layers run without transformers' forward
        assert all(layer.intermediate.gelu and layer.act is None for layer in layers)
        assert engine.forwarder.lean_encoder is not None
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
            assert type(layer.intermediate) is torch.nn.Linear and lean_layers.exact_gelu(layer.act)  # GELU back
        text = f"the cat sat on the {engine.mask_token} ."
        assert_same_hf(engine.fill(text, top_k=5).to_hf(), reference(engine.name)(text, top_k=5))
    finally:
        engine.model_thread.shutdown()


@needs_onednn
def test_a_gelu_other_than_erfs_stays_outside_the_packed_product(bert_dir: Path, tmp_path: Path) -> None:
    """oneDNN's GELU post-op is erf's; BERT variants with the tanh approximation keep their own activation."""
    shutil.copytree(bert_dir, tmp_path / "tanh")
    config = json.loads((tmp_path / "tanh" / "config.json").read_text())
    (tmp_path / "tanh" / "config.json").write_text(json.dumps({**config, "hidden_act": "gelu_new"}))
    engine = FillMaskEngine.load(tmp_path / "tanh", device="cpu", packed_weights=True)
    try:
        for layer in layers_of(engine):
            assert isinstance(layer.intermediate, PackedLinear) and not layer.intermediate.gelu
            assert layer.act is not None and not lean_layers.exact_gelu(layer.act)
        text = f"the cat sat on the {engine.mask_token} ."
        assert_same_hf(engine.fill(text, top_k=5).to_hf(), reference(engine.name)(text, top_k=5))
    finally:
        engine.model_thread.shutdown()


@pytest.mark.parametrize("dtype", ["float32", "int8"])
def test_the_lean_encoder_gives_the_models_hidden_states_padded_or_not(bert_dir: Path, dtype: str) -> None:
    if not (int8_linear.available() if dtype == "int8" else packed_linear.available()):
        pytest.skip(f"this torch has no {dtype} kernels to run lean layers with")
    engine = FillMaskEngine.load(bert_dir, device="cpu", dtype=dtype, packed_weights=packed_linear.available())
    try:
        forwarder = engine.forwarder
        assert forwarder.lean_encoder is not None
        texts = [f"a {engine.mask_token} .", f"the {engine.mask_token} sat on the mat , and the dog ran far ."]
        ids, attention, _, _ = forwarder.tensors(engine.prepare_batch([FillMaskRequest(t) for t in texts]))
        assert not attention.all()  # the short one is padded
        with torch.inference_mode():
            lean = forwarder.encode(ids, attention)
            own = forwarder.encoder(input_ids=ids, attention_mask=attention)[0]
            alone = forwarder.encode(ids[:1, :5], attention[:1, :5])  # no padding: no mask at all
        real = attention.bool()
        assert torch.allclose(lean[real], own[real], atol=1e-5)
        if dtype == "float32":  # (int8 quantizes each product's input with one scale for the whole batch)
            assert torch.allclose(lean[0, :5], alone[0], atol=1e-5)
    finally:
        engine.model_thread.shutdown()


def test_a_base_model_with_more_than_embeddings_and_layers_keeps_its_own_forward(
    bert_dir: Path, tmp_path: Path
) -> None:
    """ELECTRA projects its embeddings before the layers: its layers run lean, inside its own forward."""
    tokenizer = AutoTokenizer.from_pretrained(bert_dir)
    config = ElectraConfig(vocab_size=tokenizer.vocab_size, embedding_size=16, hidden_size=32, num_hidden_layers=2,
                           num_attention_heads=2, intermediate_size=64, max_position_embeddings=64)  # fmt: skip
    torch.manual_seed(0)
    ElectraForMaskedLM(config).eval().save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    engine = FillMaskEngine.load(tmp_path, device="cpu", packed_weights=packed_linear.available())
    try:
        assert engine.forwarder.lean_layers == 2 and engine.forwarder.lean_encoder is None
        text = f"the cat sat on the {engine.mask_token} ."
        assert_same_hf(engine.fill(text, top_k=5).to_hf(), reference(engine.name)(text, top_k=5))
    finally:
        engine.model_thread.shutdown()


def test_a_lean_encoder_that_differs_is_not_used(
    bert_dir: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    real = lean_layers.LeanEncoder.__call__
    monkeypatch.setattr(lean_layers.LeanEncoder, "__call__", lambda self, ids, mask: real(self, ids, mask)[:, :1])
    with caplog.at_level(logging.WARNING, logger=lean_layers.__name__):
        engine = FillMaskEngine.load(bert_dir, device="cpu", packed_weights=packed_linear.available())
    try:
        assert engine.forwarder.lean_layers > 0 and engine.forwarder.lean_encoder is None
        assert "model's own forward kept" in caplog.text
        text = f"the cat sat on the {engine.mask_token} ."
        assert_same_hf(engine.fill(text, top_k=5).to_hf(), reference(engine.name)(text, top_k=5))
    finally:
        engine.model_thread.shutdown()
