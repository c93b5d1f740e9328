"""MODEL_RUNTIME=onnxruntime (models/engine/onnx_model.py, onnx_export.py): ONNX Runtime runs the engine's model
from an export made once in a process of its own, checked, and cached; torch's weights never load."""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch
from transformers import pipeline

from models.bench.agreement import agreement
from models.bench.random_models import sentences
from models.bench.trained_model import build_trained_bert, probe_sentences
from models.engine import onnx_model
from models.engine.core import FillMaskEngine
from models.engine.loading import ModelLoadError, resolve_source
from models.engine.results import FillMaskRequest
from models.serving.client import engine_from
from models.settings import ModelSettings
from tests.support.hf_compare import assert_same_hf

pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")


@functools.cache
def reference(model_dir: str):
    return pipeline("fill-mask", model=model_dir, device="cpu")


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("onnx-cache")


def exports_in(cache: Path) -> list[Path]:
    """The cache's export folders (beside them: each key's lock file, and temporary folders while exporting)."""
    return [p for p in cache.iterdir() if not p.name.startswith(".")]


def on_ort(model_dir: Path, cache: Path, dtype: str = "float32") -> FillMaskEngine:
    return FillMaskEngine.load(model_dir, device="cpu", dtype=dtype, runtime="onnxruntime", onnx_cache=cache)


@pytest.mark.parametrize("kind", ["bert", "roberta", "distilbert", "albert"])
def test_fp32_on_onnx_runtime_gives_the_pipelines_answers(model_dirs: dict[str, Path], cache: Path, kind: str) -> None:
    engine = on_ort(model_dirs[kind], cache)
    assert engine.forwarder.onnx is not None and engine.precision == "float32"
    fill = reference(engine.name)
    for text in sentences(4, seed=3, mask=engine.mask_token) + sentences(2, seed=4, masks=3, mask=engine.mask_token):
        ours, theirs = engine.fill(text, top_k=5).to_hf(), fill(text, top_k=5)
        if isinstance(theirs[0], list):  # several masks: HF keeps [CLS]/[SEP] in those sequences, we do not
            for mine, hf in zip(ours, theirs, strict=True):
                assert_same_hf(mine, hf, sequence=False)
        else:
            assert_same_hf(ours, theirs)
    engine.model_thread.shutdown()


def test_torchs_weights_never_load_in_the_serving_process(bert_dir: Path, cache: Path) -> None:
    engine = on_ort(bert_dir, cache)
    assert {p.device.type for p in engine.model.parameters()} == {"meta"}  # shapes and config only
    assert engine.memory_bytes() == engine.forwarder.onnx.path.stat().st_size > 0
    engine.model_thread.shutdown()


def test_a_padded_batch_gives_each_sentence_its_own_answer(bert_dir: Path, cache: Path) -> None:
    engine = on_ort(bert_dir, cache)
    texts = [
        f"a {engine.mask_token} .",
        f"the dog ran to the {engine.mask_token} and then sat near the big red {engine.mask_token} today .",
    ]
    batch = [engine.prepare(FillMaskRequest(t)) for t in texts]
    together = engine.run_forward(batch)
    for encoded, scores in zip(batch, together, strict=True):
        alone = engine.run_forward([encoded])[0]
        assert scores.token_ids == alone.token_ids
        for row, row_alone in zip(scores.scores, alone.scores, strict=True):
            assert row == pytest.approx(row_alone, abs=1e-5)
    engine.model_thread.shutdown()


def test_targets_words_only_and_joint_filling_run_on_onnx_runtime(bert_dir: Path, cache: Path) -> None:
    engine, torch_engine = on_ort(bert_dir, cache), FillMaskEngine.load(bert_dir, device="cpu")
    text = f"the {engine.mask_token} sat on the {engine.mask_token} ."
    targets = ["cat", "dog", "mat"]
    assert_same_hf(engine.fill(text, targets=targets).to_hf(), torch_engine.fill(text, targets=targets).to_hf())
    words = engine.fill(text, top_k=20, words_only=True)
    assert all(not p.token_str.startswith("##") for mask in words.masks for p in mask)
    joint, expected = engine.fill_joint(text), torch_engine.fill_joint(text)
    assert joint.sequence == expected.sequence and len(joint.steps) == 2
    for e in (engine, torch_engine):
        e.model_thread.shutdown()


def test_int8_on_onnx_runtime_agrees_with_fp32_and_says_int8(tmp_path: Path, cache: Path) -> None:
    trained = build_trained_bert(tmp_path / "trained")
    fp32, int8 = FillMaskEngine.load(trained, device="cpu"), on_ort(trained, cache, "int8")
    assert int8.precision == "int8"  # what the answer footer shows
    result = agreement(fp32, int8, probe_sentences())
    assert result.masks == 52
    assert result.top1_equal >= 0.95 and result.top5_overlap >= 0.95 and result.max_probability_gap <= 0.03
    for e in (fp32, int8):
        e.model_thread.shutdown()


def test_the_export_is_made_once_and_reused(bert_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    on_ort(bert_dir, tmp_path).model_thread.shutdown()
    [folder] = exports_in(tmp_path)
    assert (folder / "meta.json").is_file() and (folder / "model.onnx").is_file()

    def no_export(*args, **kwargs):
        raise AssertionError("exported again")

    monkeypatch.setattr(subprocess, "run", no_export)
    engine = on_ort(bert_dir, tmp_path)
    assert engine.fill(f"the {engine.mask_token} .").masks
    engine.model_thread.shutdown()
    # Another precision, or other weights, is another export; the same files copied elsewhere are not.
    source = resolve_source(str(bert_dir))
    assert onnx_model.cache_key(source, True) != onnx_model.cache_key(source, False)
    copy = tmp_path / "copy"
    shutil.copytree(bert_dir, copy)  # new file times
    os.utime(copy / "config.json", (1, 1))
    key = onnx_model.cache_key(resolve_source(str(copy)), False)
    assert key == onnx_model.cache_key(source, False)
    other = bytearray((copy / "model.safetensors").read_bytes())
    other[-5] ^= 1  # one weight's byte, at the end of the file
    (copy / "model.safetensors").write_bytes(bytes(other))
    assert onnx_model.cache_key(resolve_source(str(copy)), False) != key


def test_an_export_that_died_is_never_used_and_its_leftovers_go(bert_dir: Path, tmp_path: Path) -> None:
    source = resolve_source(str(bert_dir))
    half = tmp_path / onnx_model.cache_key(source, False)  # a folder without meta.json: the export died in it
    half.mkdir()
    (half / "model.onnx").write_bytes(b"half a file")
    old = tmp_path / ".tmp-1-dead"
    old.mkdir()
    os.utime(old, (time.time() - 2 * onnx_model.STALE_TEMP_S,) * 2)
    young = tmp_path / ".tmp-2-running"
    young.mkdir()
    folder = onnx_model.exported(source, False, tmp_path)
    assert (folder / "meta.json").is_file() and not old.exists() and young.exists()
    assert onnx_model.OnnxMaskLogits(folder).precision == "float32"


def test_a_damaged_cached_export_is_made_again(bert_dir: Path, tmp_path: Path) -> None:
    engine = on_ort(bert_dir, tmp_path)
    expected = engine.fill(f"the {engine.mask_token} .").to_hf()
    engine.model_thread.shutdown()
    engine.forwarder.onnx.path.write_bytes(b"\0" * 100)
    again = on_ort(bert_dir, tmp_path)
    assert_same_hf(again.fill(f"the {again.mask_token} .").to_hf(), expected)
    again.model_thread.shutdown()


def test_two_replicas_starting_at_once_export_once(
    bert_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = resolve_source(str(bert_dir))
    folders: list[Path] = []
    exports: list[object] = []
    run = subprocess.run

    def counted(*args, **kwargs):
        exports.append(args)
        return run(*args, **kwargs)

    monkeypatch.setattr(subprocess, "run", counted)

    def replica() -> None:
        folders.append(onnx_model.exported(source, True, tmp_path))

    threads = [threading.Thread(target=replica) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(folders) == 2 and folders[0] == folders[1]
    assert len(exports) == 1  # the second waited for the first's export, and used it
    assert exports_in(tmp_path) == [folders[0]] and not list(tmp_path.glob(".tmp-*"))
    assert onnx_model.OnnxMaskLogits(folders[0]).precision == "int8"


def test_a_model_that_cannot_be_exported_is_a_one_line_load_error(bert_dir: Path, tmp_path: Path) -> None:
    broken = tmp_path / "broken"
    broken.mkdir()
    for f in bert_dir.iterdir():
        (broken / f.name).write_bytes(f.read_bytes())
    (broken / "model.safetensors").write_bytes(b"not weights")
    with pytest.raises(ModelLoadError, match="could not be exported to ONNX") as caught:
        on_ort(broken, tmp_path / "cache")
    assert "\n" not in str(caught.value) and caught.value.permanent
    assert not exports_in(tmp_path / "cache") and not list((tmp_path / "cache").glob(".tmp-*"))  # nothing half-made


def test_without_onnx_runtime_installed_the_error_says_what_to_install(
    bert_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import onnxruntime raises ImportError
    with pytest.raises(ModelLoadError, match=r"pip install 'mlm-bot\[onnx\]'") as caught:
        on_ort(bert_dir, tmp_path)
    assert caught.value.permanent


def test_onnx_runtime_refuses_what_it_cannot_run(bert_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="float32 or int8"):
        on_ort(bert_dir, tmp_path, "bfloat16")
    with pytest.raises(ValueError, match="not one of"):
        FillMaskEngine.load(bert_dir, device="cpu", runtime="tensorrt")
    with pytest.raises(ValueError):
        ModelSettings(model_runtime="tensorrt")
    if torch.cuda.is_available():  # auto means the CPU under ONNX Runtime, a GPU machine too
        assert on_ort(bert_dir, tmp_path).device.type == "cpu"


def test_the_settings_choose_onnx_runtime(bert_dir: Path, cache: Path) -> None:
    settings = ModelSettings(
        _env_file=None,
        model_name=str(bert_dir),
        model_device="cpu",
        model_runtime="onnxruntime",
        model_onnx_cache=str(cache),
    )
    engine = engine_from(settings)
    assert engine.forwarder.onnx is not None and Path(engine.forwarder.onnx.path).is_relative_to(cache)
    engine.model_thread.shutdown()


def test_a_hub_models_export_is_keyed_by_its_revision(
    bert_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A hub id from the local Hugging Face cache (the hub is out of reach, as on a server with HF_HUB_OFFLINE=1):
    exported under its cached revision, and found again by the next start."""
    import huggingface_hub.constants

    hub = tmp_path / "hub"
    repo = hub / "models--someone--tiny-bert"
    shutil.copytree(bert_dir, repo / "snapshots" / "0123abcd")
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0123abcd")
    monkeypatch.setenv("HF_HUB_CACHE", str(hub))  # the export's process
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(hub))  # this one
    engine = on_ort("someone/tiny-bert", tmp_path / "cache")
    assert engine.fill(f"the {engine.mask_token} .").masks
    engine.model_thread.shutdown()
    [folder] = exports_in(tmp_path / "cache")
    assert folder.name == onnx_model.cache_key(resolve_source("someone/tiny-bert"), False)
    (repo / "refs" / "main").write_text("4567cdef")  # another revision is another export
    shutil.copytree(repo / "snapshots" / "0123abcd", repo / "snapshots" / "4567cdef")
    assert onnx_model.cache_key(resolve_source("someone/tiny-bert"), False) != folder.name


def test_an_export_killed_by_the_out_of_memory_killer_says_so(
    bert_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The kernel's OOM killer ends the export with SIGKILL (a small server): the error says what happened and
    what to do, and nothing half-made stays in the cache."""
    killed = tmp_path / "python"
    killed.write_text("#!/bin/sh\nkill -9 $$\n")  # stands in for the export's interpreter, killed as it starts
    killed.chmod(0o755)
    monkeypatch.setattr(onnx_model.sys, "executable", str(killed))
    with pytest.raises(ModelLoadError, match=r"killed \(signal 9\), likely out of memory") as caught:
        onnx_model.exported(resolve_source(str(bert_dir)), True, tmp_path / "cache")
    assert caught.value.permanent and "MODEL_RUNTIME=torch" in str(caught.value)
    assert not exports_in(tmp_path / "cache") and not list((tmp_path / "cache").glob(".tmp-*"))
