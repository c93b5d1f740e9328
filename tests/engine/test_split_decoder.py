"""The fp32 MLM decoder's product in slices of the vocabulary on CPU (models/engine/accel/split_decoder.py): the
linear layer's numbers, still tied to the embeddings, the pipeline's answers, and the linear layer kept on any
difference."""

from __future__ import annotations

import logging
from functools import cache
from pathlib import Path

import pytest
import torch
from torch import nn
from transformers import pipeline

from models.bench.random_models import sentences
from models.engine.accel import packed_linear
from models.engine.accel.split_decoder import SplitDecoder
from models.engine.core import FillMaskEngine
from models.engine.results import FillMaskRequest
from tests.support.hf_compare import assert_same_hf

needs_onednn = pytest.mark.skipif(not packed_linear.available(), reason="this torch has no oneDNN linear ops")
needs_threads = pytest.mark.skipif(torch.get_num_threads() < 2, reason="one torch thread: nothing to split across")


@cache
def reference(model_dir: str):
    return pipeline("fill-mask", model=model_dir, device="cpu")


@pytest.mark.parametrize("words", [40, 43])  # 43: a remainder that no slice holds
@pytest.mark.parametrize("bias", [True, False])
def test_the_slices_give_the_linear_layers_numbers(words: int, bias: bool) -> None:
    torch.manual_seed(0)
    linear = nn.Linear(16, words, bias=bias)
    split = SplitDecoder(linear, parts=3)
    assert split.weight is linear.weight  # the same parameter: a tied decoder stays tied
    with torch.inference_mode():
        for shape in [(1, 16), (2, 16), (5, 16), (33, 16), (2, 7, 16)]:
            x = torch.randn(*shape)
            assert split(x).shape == linear(x).shape
            assert torch.allclose(split(x), linear(x), atol=1e-5), shape


@needs_onednn
@needs_threads
@pytest.mark.parametrize("kind", ["bert", "distilbert"])
def test_fp32_on_cpu_splits_the_tied_decoder_with_the_pipelines_answers(model_dirs: dict[str, Path], kind: str) -> None:
    engine = FillMaskEngine.load(model_dirs[kind], device="cpu", dtype="float32")
    try:
        decoder = engine.model.get_output_embeddings()
        assert isinstance(decoder, SplitDecoder) and engine.forwarder.decoder_slices == torch.get_num_threads()
        assert decoder.weight is engine.model.get_input_embeddings().weight, "still tied to the embeddings"
        fill = reference(engine.name)
        texts = [*sentences(3, seed=7, mask=engine.mask_token), f"a {engine.mask_token} ."]
        texts.append(f"the {engine.mask_token} sat on the mat , and the dog ran to the {engine.mask_token} .")
        encoded = engine.prepare_batch([FillMaskRequest(t) for t in texts])  # 1 to 6 masks: every product shape
        for text, result in zip(texts, engine.postprocess(encoded, engine.run_forward(encoded)), strict=True):
            assert_same_hf(result.to_hf(), fill(text), sequence=text.count(engine.mask_token) == 1)
        assert_same_hf(engine.fill(texts[0]).to_hf(), fill(texts[0]))  # one sentence, one row
    finally:
        engine.model_thread.shutdown()


@needs_onednn
@needs_threads
def test_other_precisions_and_one_thread_keep_the_linear_decoder(model_dirs: dict[str, Path], monkeypatch) -> None:
    for dtype in ("int8", "bfloat16"):
        engine = FillMaskEngine.load(model_dirs["bert"], device="cpu", dtype=dtype)
        assert engine.forwarder.decoder_slices == 0, dtype
        assert not isinstance(engine.model.get_output_embeddings(), SplitDecoder), dtype
        engine.model_thread.shutdown()
    monkeypatch.setattr(torch, "get_num_threads", lambda: 1)
    engine = FillMaskEngine.load(model_dirs["bert"], device="cpu", dtype="float32")
    assert engine.forwarder.decoder_slices == 0 and type(engine.model.get_output_embeddings()) is nn.Linear
    engine.model_thread.shutdown()


@needs_onednn
@needs_threads
def test_a_split_decoder_that_differs_is_put_back(
    model_dirs: dict[str, Path], monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(SplitDecoder, "forward", lambda self, x: torch.zeros(*x.shape[:-1], self.out_features))
    with caplog.at_level(logging.WARNING, logger="models.engine.accel.split_decoder"):
        engine = FillMaskEngine.load(model_dirs["bert"], device="cpu", dtype="float32")
    try:
        assert "could not be split" in caplog.text and engine.forwarder.decoder_slices == 0
        decoder = engine.model.get_output_embeddings()
        assert type(decoder) is nn.Linear and decoder.weight is engine.model.get_input_embeddings().weight
        text = f"the {engine.mask_token} sat on the mat ."
        assert_same_hf(engine.fill(text).to_hf(), reference(engine.name)(text))
    finally:
        engine.model_thread.shutdown()
