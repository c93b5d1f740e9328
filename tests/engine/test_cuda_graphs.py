"""CUDA graphs over (batch, length) buckets, and the engine on CUDA.

The bucket padding (static buffers, pad rows and columns, slicing the output back) is checked on CPU, where the
same buffers run eagerly (``capture=False``); the captured graphs and the CUDA paths need a GPU and skip
without one (``benchmarks/gpu_check.sh`` runs them on a GPU machine together with the benchmark)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import pipeline

from models.bench.random_models import sentences
from models.engine.accel.cuda_graphs import GraphedEncoder
from models.engine.core import FillMaskEngine
from tests.support.hf_compare import assert_same_hf

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def _eager_buckets(engine: FillMaskEngine, **kwargs) -> GraphedEncoder:
    graphed = GraphedEncoder(
        lambda ids, attention: engine.forwarder.encoder(input_ids=ids, attention_mask=attention)[0],
        device=engine.device,
        pad_token_id=engine.forwarder.pad_token_id,
        max_length=engine.max_length,
        capture=False,
        **{"max_batch": 8, "max_tokens": 256, **kwargs},
    )
    graphed.build()
    return graphed


def test_smallest_bucket_that_holds_the_batch_within_the_token_budget(bert_engine: FillMaskEngine) -> None:
    graphed = _eager_buckets(bert_engine, max_batch=8, max_tokens=256)
    assert graphed.bucket_for(1, 5) == (1, 8)
    assert graphed.bucket_for(3, 17) == (4, 24)
    assert graphed.bucket_for(8, 32) == (8, 32)
    assert graphed.bucket_for(8, 33) is None  # 8 x 48 is over the 256-token budget: eager
    assert graphed.bucket_for(9, 8) is None  # more rows than the largest bucket
    assert graphed.bucket_for(1, bert_engine.max_length) == (1, bert_engine.max_length)
    assert graphed.bucket_for(1, bert_engine.max_length + 1) is None
    assert all(b * n <= 256 for b, n in graphed.buckets)


def test_bucket_padding_leaves_the_hidden_states_of_real_tokens_unchanged(engine: FillMaskEngine) -> None:
    graphed = _eager_buckets(engine)
    batch = engine.prepare_batch([_request(t) for t in sentences(3, seed=3, mask=engine.mask_token)])
    ids, attention, _, _ = engine.forwarder.tensors(batch)
    with torch.inference_mode():
        eager = engine.forwarder.encoder(input_ids=ids, attention_mask=attention)[0]
        padded = graphed(ids, attention)
    assert padded is not None and padded.shape == eager.shape
    assert graphed.bucket_for(*ids.shape) != tuple(ids.shape), "the test must exercise padding"
    real = attention.bool()
    assert torch.allclose(padded[real], eager[real], atol=1e-5, rtol=1e-4)


def test_engine_through_buckets_equals_pipeline(engine: FillMaskEngine) -> None:
    reference = pipeline("fill-mask", model=engine.name, device="cpu")
    engine.forwarder.graphed = _eager_buckets(engine)
    try:
        for text in sentences(4, seed=11, mask=engine.mask_token):
            assert_same_hf(engine.fill(text, top_k=5).to_hf(), reference(text, top_k=5))
        two = f"the {engine.mask_token} sat on the {engine.mask_token} ."
        assert_same_hf(engine.fill(two, top_k=3).to_hf(), reference(two, top_k=3), sequence=False)
    finally:
        engine.forwarder.graphed = None


def test_cuda_graphs_asked_for_on_cpu_fall_back_to_eager(bert_dir: Path, caplog: pytest.LogCaptureFixture) -> None:
    engine = FillMaskEngine.load(bert_dir, device="cpu", cuda_graphs=True)
    assert not engine.graphs_active
    assert "running eagerly" in caplog.text
    assert len(engine.fill("the cat sat on the [MASK] .").masks[0]) == 5


@needs_cuda
@pytest.mark.parametrize("cuda_graphs", [False, True])
def test_cuda_fp32_equals_cpu_pipeline(model_dirs: dict[str, Path], cuda_graphs: bool) -> None:
    for kind in ("bert", "roberta"):
        engine = FillMaskEngine.load(model_dirs[kind], device="cuda", dtype="float32", cuda_graphs=cuda_graphs)
        assert engine.graphs_active is cuda_graphs
        reference = pipeline("fill-mask", model=engine.name, device="cpu")
        for text in sentences(8, seed=5, mask=engine.mask_token):
            assert_same_hf(engine.fill(text, top_k=5).to_hf(), reference(text, top_k=5), rel=1e-3)


@needs_cuda
@pytest.mark.parametrize("cuda_graphs", [False, True])
def test_cuda_bf16_close_to_cpu_fp32(bert_dir: Path, cuda_graphs: bool) -> None:
    """bf16 keeps 8 bits of mantissa: probabilities within 0.02 of fp32, and the same top word wherever fp32's
    top two are more than 0.05 apart (closer than that, bf16 rounding may swap them)."""
    engine = FillMaskEngine.load(bert_dir, device="cuda", dtype="bfloat16", cuda_graphs=cuda_graphs)
    cpu = FillMaskEngine.load(bert_dir, device="cpu", dtype="float32")
    assert engine.graphs_active is cuda_graphs
    for text in sentences(16, seed=9):
        ours, ref = engine.fill(text, top_k=5).masks[0], cpu.fill(text, top_k=5).masks[0]
        ref_scores = {p.token: p.score for p in ref}
        for p in ours:
            if p.token in ref_scores:
                assert abs(p.score - ref_scores[p.token]) < 0.02
        if ref[0].score - ref[1].score > 0.05:
            assert ours[0].token == ref[0].token


def _request(text: str):
    from models.engine.results import FillMaskRequest

    return FillMaskRequest(text)


def test_cuda_graphs_setting_is_auto_unless_set(monkeypatch: pytest.MonkeyPatch) -> None:
    from models.settings import ModelSettings

    monkeypatch.delenv("MODEL_CUDA_GRAPHS", raising=False)
    assert ModelSettings().model_cuda_graphs is None
    for value, expected in (("auto", None), ("1", True), ("true", True), ("0", False), ("off", False)):
        monkeypatch.setenv("MODEL_CUDA_GRAPHS", value)
        assert ModelSettings().model_cuda_graphs is expected


def test_auto_cuda_graphs_on_cpu_stay_off_without_a_warning(bert_dir: Path, caplog: pytest.LogCaptureFixture) -> None:
    engine = FillMaskEngine.load(bert_dir, device="cpu")
    assert not engine.graphs_active
    assert "CUDA graphs" not in caplog.text.replace("CUDA graphs=False", "")
