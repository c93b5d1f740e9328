"""MODEL_DTYPE=int8 (models/engine/accel/int8_linear.py): int8 weights on CPU, close to fp32 on a trained model,
and a safe way back."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch
from torch import nn

from models.bench.agreement import agreement
from models.bench.trained_model import build_trained_bert, probe_sentences
from models.engine.accel import int8_linear
from models.engine.accel.int8_linear import Int8Decoder, Int8Embedding, Int8Linear
from models.engine.core import FillMaskEngine
from models.engine.device import resolve_dtype
from models.engine.results import FillMaskRequest

needs_int8 = pytest.mark.skipif(not int8_linear.available(), reason="this torch has no int8 kernels")


@pytest.fixture(scope="session")
def trained_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_trained_bert(tmp_path_factory.mktemp("trained") / "bert")


@pytest.fixture(scope="module")
def fp32_and_int8(trained_dir: Path):
    fp32 = FillMaskEngine.load(trained_dir, device="cpu", dtype="float32")
    int8 = FillMaskEngine.load(trained_dir, device="cpu", dtype="int8")
    yield fp32, int8
    for engine in (fp32, int8):
        engine.model_thread.shutdown()


@needs_int8
def test_the_trained_model_has_learned_its_corpus(fp32_and_int8) -> None:
    fp32, _ = fp32_and_int8
    top = fp32.fill("The dog sat on the [MASK].", top_k=3).masks[0]
    assert top[0].token_str == "mat" and top[0].score > 0.3
    assert {p.token_str for p in top} <= {"mat", "chair", "bed", "table"}


@needs_int8
def test_int8_quantizes_every_linear_layer_and_says_so(fp32_and_int8) -> None:
    fp32, int8 = fp32_and_int8
    assert fp32.precision == "float32" and int8.precision == "int8"
    layers = [m for m in int8.model.modules() if isinstance(m, (nn.Linear, Int8Linear, Int8Decoder))]
    assert layers and all(isinstance(m, (Int8Linear, Int8Decoder)) for m in layers)
    assert int8.forwarder.int8_layers == len({id(m) for m in layers})
    assert int8.packed_layers == 0  # nothing left to pack: int8 replaces the packed fp32 layers


@needs_int8
def test_the_tied_vocabulary_is_quantized_once(fp32_and_int8) -> None:
    """The input embeddings read one int8 matrix, and the MLM head's decoder is those same int8 numbers packed for
    the kernels: no fp32 copy of the vocabulary left (bert-base: 22 + 22 MB where there were 94)."""
    fp32, int8 = fp32_and_int8
    embedding, decoder = int8.model.get_input_embeddings(), int8.model.get_output_embeddings()
    assert isinstance(embedding, Int8Embedding) and isinstance(decoder, Int8Decoder)
    assert embedding.words is decoder.words and embedding.words.weight.dtype == torch.int8
    packed = torch.ops.quantized.linear_unpack(decoder.packed)[0]
    assert torch.equal(packed.int_repr(), embedding.words.weight)
    assert torch.allclose(packed.q_per_channel_scales().float(), embedding.words.scales)
    vocabulary = fp32.model.get_input_embeddings().weight
    big = [t for t in int8.model.state_dict().values() if t.dtype == torch.float32 and t.shape == vocabulary.shape]
    assert big == [], "an fp32 vocabulary matrix is left"
    rows = torch.tensor([[5, 17, 3]])
    assert torch.allclose(
        embedding(rows), fp32.model.get_input_embeddings()(rows), atol=vocabulary.abs().max().item() / 127
    )
    assert int8.memory_bytes() < 0.6 * fp32.memory_bytes()


@needs_int8
def test_int8_runs_every_architecture_the_tests_build(model_dirs: dict[str, Path]) -> None:
    for name, directory in model_dirs.items():
        engine = FillMaskEngine.load(directory, device="cpu", dtype="int8")
        assert engine.precision == "int8", name
        assert len(engine.fill(f"the cat sat on the {engine.mask_token} .").masks[0]) == 5, name


@needs_int8
def test_int8_agrees_with_fp32_on_the_fixed_sentences(fp32_and_int8) -> None:
    fp32, int8 = fp32_and_int8
    result = agreement(fp32, int8, probe_sentences())
    # Measured: 52 masks, top-1 equal 100%, top-5 overlap 99.2%, largest probability gap 0.005.
    assert result.masks == 52
    assert result.top1_equal >= 0.95
    assert result.top5_overlap >= 0.95
    assert result.max_probability_gap <= 0.03


@pytest.mark.skipif(int8_linear.engine() != "fbgemm", reason="oneDNN keeps its copy: fbgemm is what holds it once")
def test_each_int8_weight_is_held_once(fp32_and_int8) -> None:
    """Only the kernels' packed layout is kept: unpacking rebuilds the int8 weight each time (oneDNN, the engine
    before, kept the quantized tensor beside its packed copy and handed that same tensor back: bert-base's 85 MB of
    int8 weights twice)."""
    _, int8 = fp32_and_int8
    layers = [m for m in int8.model.modules() if isinstance(m, Int8Linear)]
    assert layers
    for layer in layers:
        first, second = (torch.ops.quantized.linear_unpack(layer.packed)[0] for _ in range(2))
        assert torch.equal(first.int_repr(), second.int_repr())
        assert first.data_ptr() != second.data_ptr(), "a stored copy of the int8 weight"


@needs_int8
def test_without_vnni_the_inputs_are_quantized_to_seven_bits(trained_dir: Path, monkeypatch) -> None:
    """Without AVX-512 VNNI, int8 kernels add u8 x s8 pairs in 16 bits, which a full 8-bit input can saturate: there
    each input gets 7 bits, and int8 still agrees with fp32."""
    fp32 = FillMaskEngine.load(trained_dir, device="cpu", dtype="float32")
    monkeypatch.setattr(torch.cpu, "_is_vnni_supported", lambda: False)
    old_cpu = FillMaskEngine.load(trained_dir, device="cpu", dtype="int8")
    layers = [m for m in old_cpu.model.modules() if isinstance(m, Int8Linear)]
    assert old_cpu.precision == "int8" and layers and all(m.reduce_range for m in layers)
    result = agreement(fp32, old_cpu, probe_sentences())
    assert result.top1_equal >= 0.95 and result.top5_overlap >= 0.95 and result.max_probability_gap <= 0.03
    monkeypatch.setattr(torch.cpu, "_is_vnni_supported", lambda: True)
    assert not Int8Linear(nn.Linear(8, 4)).reduce_range
    monkeypatch.delattr(torch.cpu, "_is_vnni_supported")  # can't tell: the safe 7 bits
    assert Int8Linear(nn.Linear(8, 4)).reduce_range
    for engine in (fp32, old_cpu):
        engine.model_thread.shutdown()


@pytest.mark.skipif("onednn" not in torch.backends.quantized.supported_engines, reason="no oneDNN int8 kernels")
def test_without_fbgemm_int8_runs_on_onednn_with_its_rows_rounded(trained_dir: Path, monkeypatch) -> None:
    """fbgemm is x86's; where torch lacks it (ARM servers) oneDNN's int8 kernels run, each product's rows rounded
    (oneDNN keeps a primitive per shape), and int8 still agrees with fp32."""
    monkeypatch.setattr(torch.backends.quantized, "engine", torch.backends.quantized.engine)  # put back after
    fp32 = FillMaskEngine.load(trained_dir, device="cpu", dtype="float32")
    monkeypatch.setattr(int8_linear, "ENGINES", ("onednn",))
    onednn = FillMaskEngine.load(trained_dir, device="cpu", dtype="int8")
    try:
        layers = [m for m in onednn.model.modules() if isinstance(m, (Int8Linear, Int8Decoder))]
        assert onednn.precision == "int8" and layers and all(m.rounded for m in layers)
        result = agreement(fp32, onednn, probe_sentences())
        assert result.top1_equal >= 0.95 and result.top5_overlap >= 0.95 and result.max_probability_gap <= 0.03
    finally:
        for engine in (fp32, onednn):
            engine.model_thread.shutdown()
    monkeypatch.setattr(int8_linear, "ENGINES", ())
    assert not int8_linear.available()
    with pytest.raises(RuntimeError, match="none of the int8 kernels"):
        int8_linear.use_engine()


@needs_int8
def test_int8_batches_give_each_sentence_its_own_answer(fp32_and_int8) -> None:
    """A sentence in a batch gets the words it gets alone. Not quite the same scores: each product quantizes its
    whole input with one scale, so the other sentences of a batch move a sentence's numbers a little."""
    _, int8 = fp32_and_int8
    texts = probe_sentences()[:9]
    alone = [int8.fill(t).masks for t in texts]
    encoded = int8.prepare_batch([FillMaskRequest(t) for t in texts])
    together = [r.masks for r in int8.postprocess(encoded, int8.run_forward(encoded))]
    for a, b in zip(alone, together, strict=True):
        assert [p.token for p in a[0]] == [p.token for p in b[0]]
        assert [p.score for p in a[0]] == pytest.approx([p.score for p in b[0]], abs=0.02)


@needs_int8
def test_int8_that_disagrees_with_fp32_is_put_back(
    trained_dir: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(Int8Linear, "forward", lambda self, x: torch.zeros(*x.shape[:-1], self.out_features))
    with caplog.at_level(logging.WARNING, logger="models.engine.forward"):
        engine = FillMaskEngine.load(trained_dir, device="cpu", dtype="int8", packed_weights=False)
    assert engine.precision == "float32" and "int8 weights could not be used" in caplog.text
    assert all(type(m) not in (Int8Linear, Int8Embedding, Int8Decoder) for m in engine.model.modules())
    assert engine.model.get_output_embeddings().weight is engine.model.get_input_embeddings().weight, "still tied"
    assert engine.fill("The dog sat on the [MASK].").masks[0][0].token_str == "mat"
    engine.model_thread.shutdown()


def test_int8_is_a_cpu_precision() -> None:
    assert resolve_dtype("int8", torch.device("cpu")) == torch.float32  # loaded in fp32, quantized at warm-up
    assert resolve_dtype(" INT8 ", torch.device("cpu")) == torch.float32
    with pytest.raises(ValueError, match="is for CPU"):
        resolve_dtype("int8", torch.device("cuda"))
    with pytest.raises(ValueError, match="auto, int8"):
        resolve_dtype("int4", torch.device("cpu"))


def test_every_cpu_engine_of_a_process_runs_torch_on_one_thread(model_dirs: dict[str, Path]) -> None:
    """Two threads running torch on CPU are two OpenMP teams, more threads than cores: libgomp then sleeps
    between parallel regions, and the bot's model answered one sentence at half speed after the first /compare
    (int8 bert-base 17 -> 36 ms here). Every engine, /compare's too, runs on the one torch thread; loading
    threads end."""
    import threading

    engines = [FillMaskEngine.load(model_dirs[k], device="cpu") for k in ("bert", "albert", "roberta")]
    ran_on = {e.model_thread.submit(threading.get_ident).result() for e in engines}
    assert len(ran_on) == 1
    assert [t.name for t in threading.enumerate() if t.name.startswith("mlm-model")] == [
        t.name for t in threading.enumerate() if t.ident in ran_on
    ], "no loading thread is left behind"
    engines[0].model_thread.shutdown()  # one engine closing does not stop the others
    assert engines[1].fill("the [MASK] sat on the mat .").masks
