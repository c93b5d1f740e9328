"""FillMaskEngine against Hugging Face's own fill-mask pipeline, on tiny BERT and RoBERTa models."""

from __future__ import annotations

import logging
from functools import cache
from pathlib import Path

import pytest
import torch
from transformers import pipeline

from models.bench.random_models import WORDS, sentences
from models.engine.core import FillMaskEngine
from models.engine.device import _suggest_bf16, cpu_bf16_instructions
from models.engine.errors import (
    EmptyInputError,
    InputTooLongError,
    InvalidParameterError,
    NoMaskError,
    TargetNotSingleTokenError,
    TooManyMasksError,
)
from models.engine.results import FillMaskRequest
from tests.support.hf_compare import assert_same_hf


@cache
def reference(model_dir: str):
    return pipeline("fill-mask", model=model_dir, device="cpu")


assert_same = assert_same_hf


def texts(engine: FillMaskEngine, count: int, masks: int = 1) -> list[str]:
    return sentences(count, seed=7 + masks, masks=masks, mask=engine.mask_token)


@pytest.mark.parametrize("top_k", [1, 5, 17])
def test_single_mask_equals_pipeline(engine: FillMaskEngine, top_k: int) -> None:
    fill = reference(engine.name)
    for text in texts(engine, 6):
        assert_same(engine.fill(text, top_k=top_k).to_hf(), fill(text, top_k=top_k))


@pytest.mark.parametrize("kind", ["distilbert", "albert"])
def test_other_architectures_load_and_equal_pipeline(model_dirs: dict[str, Path], kind: str) -> None:
    engine = FillMaskEngine.load(model_dirs[kind], device="cpu")
    assert engine.forwarder.head is not None, "the MLM head should run at mask positions only"
    text = f"The cat sat on the {engine.mask_token}."
    assert_same(engine.fill(text).to_hf(), reference(engine.name)(text))


def test_head_runs_at_mask_positions_only(engine: FillMaskEngine) -> None:
    assert engine.forwarder.head is not None
    seen: list[tuple[int, ...]] = []
    head = engine.forwarder.head
    handle = head.register_forward_hook(lambda m, args, out: seen.append(tuple(args[0].shape)))
    try:
        engine.fill(f"the {engine.mask_token} sat on the {engine.mask_token} today .")
    finally:
        handle.remove()
    assert seen == [(2, engine.model.config.hidden_size)]  # two mask rows, not batch x sequence


def test_several_masks_give_per_mask_lists_like_pipeline(engine: FillMaskEngine) -> None:
    fill = reference(engine.name)
    for text in texts(engine, 4, masks=3):
        ours, theirs = engine.fill(text, top_k=4).to_hf(), fill(text, top_k=4)
        assert len(ours) == len(theirs) == 3
        for mine, hf in zip(ours, theirs, strict=False):
            assert_same(mine, hf, sequence=False)  # HF keeps [CLS]/[SEP] in these sequences; we do not
            for p in mine:
                assert p["sequence"].count(engine.mask_token) == 2
                assert engine.tokenizer.cls_token not in p["sequence"]


def test_joint_fill_fills_most_confident_mask_first_and_reruns(engine: FillMaskEngine) -> None:
    fill = reference(engine.name)
    mask = engine.mask_token
    text = f"the {mask} sat on the {mask} ."
    joint = engine.fill_joint(text)

    # The same procedure spelled out with the pipeline: first choice = the mask with the best top-1.
    first = fill(text, top_k=1)
    best = max(range(2), key=lambda i: first[i][0]["score"])
    assert joint.steps[0].mask_index == best
    assert joint.steps[0].token == first[best][0]["token"]
    ids = engine.tokenizer(text)["input_ids"]
    positions = [i for i, t in enumerate(ids) if t == engine.mask_token_id]
    ids[positions[best]] = first[best][0]["token"]
    rerun = engine.tokenizer.decode(ids[1:-1])  # the partly filled text, as the model saw it
    second = fill(rerun, top_k=1)[0]
    assert joint.steps[1].mask_index == 1 - best
    assert joint.steps[1].token == second["token"]
    assert joint.steps[1].score == pytest.approx(second["score"], abs=1e-3)
    ids[positions[1 - best]] = second["token"]
    assert joint.sequence == engine.tokenizer.decode(ids, skip_special_tokens=True)


@pytest.mark.parametrize("alias", ["[MASK]", "[mask]", "<mask>", "<MASK>", "[ Mask ]"])
def test_mask_aliases_map_to_the_models_token(engine: FillMaskEngine, alias: str) -> None:
    own = engine.fill(f"the cat sat on the {engine.mask_token} .").to_hf()
    assert engine.fill(f"the cat sat on the {alias} .").to_hf() == own


def test_targets_score_only_those_words(bert_engine: FillMaskEngine) -> None:
    text = "the cat sat on the [MASK] ."
    targets = ["mat", "dog", "table", "bed"]
    ours = bert_engine.fill(text, targets=targets, top_k=10).to_hf()
    theirs = reference(bert_engine.name)(text, targets=targets, top_k=10)
    assert len(ours) == 4  # top_k is clamped to the number of targets, as HF does
    assert_same(ours, theirs)
    full = {p["token"]: p["score"] for p in bert_engine.fill(text, top_k=50).to_hf()}
    for p in ours:
        if p["token"] in full:
            assert p["score"] == pytest.approx(full[p["token"]], abs=1e-6)


def test_target_spelled_differently_still_resolves(bert_engine: FillMaskEngine, roberta_engine: FillMaskEngine) -> None:
    upper = bert_engine.fill("the cat sat on the [MASK] .", targets=["Mat"]).to_hf()
    assert [p["token_str"] for p in upper] == ["mat"]  # uncased vocabulary
    spaced = roberta_engine.fill("The cat sat on the <mask>.", targets=["mat"]).to_hf()
    assert roberta_engine.tokenizer.convert_ids_to_tokens(spaced[0]["token"]) == "Ġmat"


def test_target_that_is_not_one_token_is_reported(bert_engine: FillMaskEngine) -> None:
    with pytest.raises(TargetNotSingleTokenError) as info:
        bert_engine.fill("the cat sat on the [MASK] .", targets=["mat", "supercalifragilistic", "🙂"])
    assert info.value.details["targets"] == ["supercalifragilistic", "🙂"]
    assert "supercalifragilistic" in info.value.message
    with pytest.raises(InvalidParameterError):
        bert_engine.fill("the cat sat on the [MASK] .", targets=[])


def test_long_input_keeps_the_mask_in_a_window(engine: FillMaskEngine) -> None:
    mask = engine.mask_token
    filler = " ".join(WORDS[:40])
    for text in (
        f"{filler} {filler} the cat sat on the {mask} .",
        f"the {mask} sat . {filler} {filler} {filler}",
        f"{filler} {filler} the {mask} sat on the {mask} . {filler} {filler}",
    ):
        assert len(engine.tokenizer(text)["input_ids"]) > engine.max_length
        encoded = engine.prepare(FillMaskRequest(text))
        assert encoded.truncated
        assert len(encoded) == engine.max_length
        assert encoded.input_ids[0] == engine.tokenizer.cls_token_id
        assert encoded.input_ids[-1] == engine.tokenizer.sep_token_id
        assert [encoded.input_ids[p] for p in encoded.mask_positions] == [engine.mask_token_id] * text.count(mask)
        result = engine.fill(text)
        assert result.truncated
        # The window is what the model read: the pipeline on that window gives the same answer.
        window = engine.tokenizer.decode(encoded.input_ids[1:-1])
        assert [p.token for p in result.masks[0]] == [
            p["token"] for p in (lambda r: r if isinstance(r[0], dict) else r[0])(reference(engine.name)(window))
        ]
    far_apart = f"{mask} {filler} {filler} {filler} {mask}"
    with pytest.raises(InputTooLongError, match="too far apart"):
        engine.fill(far_apart)


@pytest.mark.parametrize(
    ("text", "kwargs", "error", "hint"),
    [
        ("", {}, EmptyInputError, "[MASK]"),
        ("   \n\t ", {}, EmptyInputError, "[MASK]"),
        ("the cat sat on the mat", {}, NoMaskError, "[MASK]"),
        ("🙂🙂🙂", {}, NoMaskError, "[MASK]"),
        (" ".join(["[MASK]"] * 6), {}, TooManyMasksError, "limit is 5"),
        ("the [MASK] sat", {"top_k": 0}, InvalidParameterError, "1 to 50"),
        ("the [MASK] sat", {"top_k": 51}, InvalidParameterError, "1 to 50"),
        ("the [MASK] sat", {"top_k": "5"}, InvalidParameterError, "1 to 50"),
        ("the [MASK] sat " + "x" * 30_000, {}, InputTooLongError, "too long"),
    ],
)
def test_errors_are_typed_and_readable(bert_engine: FillMaskEngine, text, kwargs, error, hint) -> None:
    with pytest.raises(error) as info:
        bert_engine.fill(text, **kwargs)
    assert hint in info.value.message
    assert info.value.code and 300 <= info.value.http_status < 600


def test_mask_limit_is_configurable(bert_dir: Path) -> None:
    engine = FillMaskEngine.load(bert_dir, max_masks=2, device="cpu")
    engine.fill("the [MASK] sat on [MASK]")
    with pytest.raises(TooManyMasksError, match="limit is 2"):
        engine.fill("the [MASK] [MASK] on [MASK]")


def test_one_bad_request_does_not_fail_its_batch(bert_engine: FillMaskEngine) -> None:
    out = bert_engine.prepare_batch(
        [FillMaskRequest("a [MASK] b"), FillMaskRequest("no mask"), FillMaskRequest("c [MASK]")]
    )
    assert isinstance(out[1], NoMaskError)
    assert [type(o).__name__ for o in (out[0], out[2])] == ["EncodedInput", "EncodedInput"]


def test_batched_forward_equals_one_at_a_time(engine: FillMaskEngine) -> None:
    requests = [FillMaskRequest(t, top_k=3) for t in texts(engine, 5) + texts(engine, 3, masks=2)]
    encoded = engine.prepare_batch(requests)
    batched = engine.postprocess(encoded, engine.run_forward(encoded))
    for e, result in zip(encoded, batched, strict=False):
        alone = engine.postprocess([e], engine.run_forward([e]))[0]
        assert [[p.token for p in m] for m in result.masks] == [[p.token for p in m] for m in alone.masks]
        for m1, m2 in zip(result.masks, alone.masks, strict=False):
            assert [p.score for p in m1] == pytest.approx([p.score for p in m2], abs=1e-5)


def test_words_only_drops_special_tokens_and_word_pieces(bert_engine: FillMaskEngine) -> None:
    result = bert_engine.fill("the cat sat on the [MASK] .", top_k=50, words_only=True)
    special = set(bert_engine.tokenizer.all_special_ids)
    for p in result.masks[0]:
        assert p.token not in special
        assert not p.token_str.startswith("##")
    plain = {p.token for p in bert_engine.fill("the cat sat on the [MASK] .", top_k=50).masks[0]}
    assert plain & (special | {i for t, i in bert_engine.tokenizer.get_vocab().items() if t.startswith("##")})


def test_device_and_dtype_defaults_on_cpu(bert_engine: FillMaskEngine) -> None:
    if torch.cuda.is_available():
        pytest.skip("CPU defaults checked on machines without CUDA")
    assert bert_engine.device.type == "cpu"
    assert bert_engine.dtype == torch.float32


def test_dtype_and_device_overrides(bert_dir: Path) -> None:
    engine = FillMaskEngine.load(bert_dir, device="cpu", dtype="bfloat16")
    assert engine.dtype == torch.bfloat16
    assert len(engine.fill("the cat sat on the [MASK] .").masks[0]) == 5
    with pytest.raises(ValueError, match="MODEL_DTYPE"):
        FillMaskEngine.load(bert_dir, dtype="float8")
    with pytest.raises(ValueError, match="MODEL_DEVICE"):
        FillMaskEngine.load(bert_dir, device="tpu:7")


def test_cpu_bf16_close_to_cpu_fp32(bert_dir: Path, bert_engine: FillMaskEngine) -> None:
    """What README and the start-up hint promise for MODEL_DTYPE=bfloat16 on a CPU: probabilities within 0.02
    of fp32, the same top word wherever fp32's top two are more than 0.05 apart (this tiny model is confident,
    so most masks are)."""
    engine = FillMaskEngine.load(bert_dir, device="cpu", dtype="bfloat16")
    clear = 0
    for text in sentences(32, seed=9):
        ours, ref = engine.fill(text, top_k=5).masks[0], bert_engine.fill(text, top_k=5).masks[0]
        ref_scores = {p.token: p.score for p in ref}
        assert all(abs(p.score - ref_scores[p.token]) < 0.02 for p in ours if p.token in ref_scores)
        if ref[0].score - ref[1].score > 0.05:
            clear += 1
            assert ours[0].token == ref[0].token
    assert clear >= 16
    engine.model_thread.shutdown()


def test_cpu_bf16_instructions_come_from_cpuinfo(tmp_path: Path) -> None:
    info = tmp_path / "cpuinfo"
    info.write_text(
        "processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f avx512_bf16 avx512_vnni\n\nprocessor\t: 1\nflags\t\t: fpu\n"
    )
    assert cpu_bf16_instructions(info) == "avx512_bf16"
    info.write_text("flags\t\t: fpu avx512_bf16 amx_tile amx_bf16 amx_int8\n")
    assert cpu_bf16_instructions(info) == "amx_bf16"
    info.write_text("flags\t\t: fpu sse2 avx2 avx512f avx512_vnni\n")
    assert cpu_bf16_instructions(info) is None
    info.write_text("Features\t: fp asimd bf16\n")  # aarch64 names it differently; not measured, so not claimed
    assert cpu_bf16_instructions(info) is None
    assert cpu_bf16_instructions(tmp_path / "no-such-file") is None


def test_loading_fp32_on_a_cpu_with_native_bf16_points_at_bfloat16(
    bert_dir: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="models.engine.device")

    def hinted(flag: str | None, dtype: str | None) -> bool:
        monkeypatch.setattr("models.engine.device.cpu_bf16_instructions", lambda: flag)
        _suggest_bf16.cache_clear()
        caplog.clear()
        FillMaskEngine.load(bert_dir, device="cpu", dtype=dtype, warm_up=False).model_thread.shutdown()
        return "MODEL_DTYPE=bfloat16" in caplog.text

    assert hinted("avx512_bf16", None) and "avx512_bf16" in caplog.text
    assert hinted("amx_bf16", "auto")
    assert not hinted(None, None)  # no bf16 instructions: no speed to gain, say nothing
    assert not hinted("avx512_bf16", "float32")  # a deliberate choice is not second-guessed
    assert not hinted("avx512_bf16", "bfloat16")
    hinted("avx512_bf16", None)
    caplog.clear()
    FillMaskEngine.load(bert_dir, device="cpu", warm_up=False).model_thread.shutdown()
    assert "MODEL_DTYPE=bfloat16" not in caplog.text  # once per process: the bot loads /compare's models too


def test_a_head_that_does_not_reproduce_the_logits_falls_back_to_the_full_model(bert_dir: Path) -> None:
    engine = FillMaskEngine.load(bert_dir, warm_up=False, device="cpu")
    engine.forwarder.head = torch.nn.Linear(engine.model.config.hidden_size, engine.vocab_size)  # not the model's head
    engine.warm_up()
    assert engine.forwarder.head is None
    text = "the cat sat on the [MASK] ."
    assert_same(engine.fill(text).to_hf(), reference(engine.name)(text))
