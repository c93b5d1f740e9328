"""``MODEL_RUNTIME=onnxruntime``: ONNX Runtime runs the engine's model in place of torch (CPU, fp32 or int8).

Why it exists, measured (docs/engine.md): on a 2-core CPU, ONNX Runtime's int8 graph of bert-base's encoder and
head at the masks took 7.5-8.0 ms for a 12-token sentence where the torch int8 path took 8.7-9.4, and 119 against
124-149 ms for 32 sentences: its kernels are called with less fixed cost per call (torch spends ~14 us in each of
48 calls before any arithmetic). Torch's copy of the weights is never loaded in the serving process: the model is
built on torch's ``meta`` device (shapes, config, no memory) and the weights live in the ONNX Runtime session.

The export (``models/engine/onnx_export.py``) runs once per model, precision and library versions, in a process of
its own, and is kept in ``MODEL_ONNX_CACHE`` (default ``~/.cache/mlm-bot/onnx``): a folder per key, written under
a temporary name and renamed into place only when complete and checked, so a crash mid-export leaves nothing a
later start would use, and two replicas exporting at once both end with one good folder.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import subprocess
import sys
import time
import uuid
from importlib import metadata
from pathlib import Path

import numpy as np
import torch
from filelock import FileLock

from models.engine.loading import ModelLoadError, ModelSource

log = logging.getLogger(__name__)

FORMAT = 1  # bump when the graph the export writes changes
STALE_TEMP_S = 3600.0
INSTALL_HINT = "MODEL_RUNTIME=onnxruntime needs ONNX Runtime: pip install 'mlm-bot[onnx]' (or set MODEL_RUNTIME=torch)"


def default_cache() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "mlm-bot" / "onnx"


def check_installed() -> None:
    for module in ("onnx", "onnxruntime"):
        try:
            __import__(module)
        except ImportError:
            raise ModelLoadError(INSTALL_HINT, permanent=True) from None


def cache_key(source: ModelSource, int8: bool) -> str:
    """What the exported files depend on: the model's files (for a folder: each file's name and content, see
    ``_fingerprint``; for a hub id: the cached revision), the precision, and the versions of the libraries that
    wrote and will run them."""
    what: dict[str, object] = {"format": FORMAT, "model": source.name, "int8": int8}
    what["versions"] = {p: _version(p) for p in ("torch", "transformers", "onnx", "onnxruntime")}
    folder = Path(source.name)
    if folder.is_dir():
        what["model"] = "a folder"  # by its files: a copy elsewhere finds the same export
        what["files"] = sorted((p.name, _fingerprint(p)) for p in folder.iterdir() if p.is_file())
    else:
        from huggingface_hub import try_to_load_from_cache

        config = try_to_load_from_cache(source.name, "config.json")
        what["revision"] = Path(config).parent.name if isinstance(config, str) else None
    return hashlib.sha256(json.dumps(what, sort_keys=True).encode()).hexdigest()[:32]


def _fingerprint(path: Path, edge: int = 1 << 20) -> str:
    """A file's size and the hash of its content, or of its first and last MiB when it is larger than 4 MiB (a
    weights file: any other checkpoint, a fine-tune included, differs there; its 440 MB are not read at every
    start). Not its time: a folder copied elsewhere, with its cache, keeps its key."""
    size = path.stat().st_size
    digest = hashlib.sha256(str(size).encode())
    with path.open("rb") as f:
        if size <= 4 * edge:
            digest.update(f.read())
        else:
            digest.update(f.read(edge))
            f.seek(size - edge)
            digest.update(f.read(edge))
    return digest.hexdigest()


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "none"


def exported(source: ModelSource, int8: bool, cache: Path) -> Path:
    """The folder of this model's checked ONNX export, exporting it first (in a process of its own) when the cache
    has none. Raises :class:`ModelLoadError` when the export fails."""
    key = cache_key(source, int8)
    folder = cache / key
    if (folder / "meta.json").is_file():
        return folder
    cache.mkdir(parents=True, exist_ok=True)
    # One export at a time per key on this host (replicas, Ray Serve's workers): the others wait for it and use it,
    # rather than each needing the export's memory at once. An flock: the kernel releases it if its holder dies
    # (a soft lock would outlive a crash and hold every later start).
    lock = FileLock(cache / f".{key}.lock", thread_local=False, fallback_to_soft=False)  # never a soft lock
    try:
        lock.acquire()
    except (OSError, NotImplementedError):  # no flock here (a network file system): the rename below still holds
        log.warning("%s has no file locks: replicas starting together may each export the model", cache)
        return _export(source, int8, cache, folder)
    try:
        if (folder / "meta.json").is_file():
            return folder
        return _export(source, int8, cache, folder)
    finally:
        lock.release()


def _export(source: ModelSource, int8: bool, cache: Path, folder: Path) -> Path:
    _remove_stale_temps(cache)
    temp = cache / f".tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    log.info("exporting %s to ONNX (%s), once: it is kept in %s", source.name, "int8" if int8 else "fp32", cache)
    job = {"name": source.name, "local_files_only": source.local_files_only, "int8": int8, "out_dir": str(temp)}
    started = time.monotonic()
    try:
        done = subprocess.run(
            [sys.executable, "-m", "models.engine.onnx_export"],
            input=json.dumps(job),
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode < 0:  # a signal: on a small server, the kernel's out-of-memory killer
            raise ModelLoadError(
                f"MODEL_NAME={source.name} could not be exported to ONNX: the export was killed (signal "
                f"{-done.returncode}), likely out of memory: it needs about 5 times the model's weight files for a "
                "moment (bert-base: 2.2 GB). Add swap, export on a bigger machine (docs/engine.md), or set "
                "MODEL_RUNTIME=torch",
                permanent=True,  # the same files, the same memory: another try in this process fails alike
            )
        if done.returncode != 0:
            last = done.stderr.strip().splitlines()[-1:] or [f"exit status {done.returncode}"]
            raise ModelLoadError(
                f"MODEL_NAME={source.name} could not be exported to ONNX: {last[0][:300]}", permanent=True
            )
        try:
            os.rename(temp, folder)
        except OSError:  # another replica finished first (its folder is as good as ours), or a broken leftover
            if not (folder / "meta.json").is_file():
                shutil.rmtree(folder, ignore_errors=True)
                os.rename(temp, folder)
    finally:
        shutil.rmtree(temp, ignore_errors=True)
    log.info("exported %s to ONNX in %.1f s", source.name, time.monotonic() - started)
    return folder


def _remove_stale_temps(cache: Path) -> None:
    """Temporary folders of exports that died (a crash, a kill) over an hour ago; a running export's is younger."""
    for temp in cache.glob(".tmp-*"):
        try:
            if time.time() - temp.stat().st_mtime > STALE_TEMP_S:
                shutil.rmtree(temp, ignore_errors=True)
        except OSError:
            pass


class OnnxMaskLogits:
    """An ONNX Runtime session of the exported graph: ``(ids, attention, rows, cols) -> logits at the masks``, on
    the engine's model thread, with as many threads as torch was given (``torch.get_num_threads``: the CPUs this
    process may use, not the machine's)."""

    def __init__(self, folder: Path) -> None:
        import onnxruntime as ort

        meta = json.loads((folder / "meta.json").read_text())
        self.precision: str = meta["precision"]
        self.path = folder / "model.onnx"
        options = ort.SessionOptions()
        options.intra_op_num_threads = torch.get_num_threads()
        options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(str(self.path), options, providers=["CPUExecutionProvider"])

    def nbytes(self) -> int:
        return self.path.stat().st_size

    def __call__(self, ids: torch.Tensor, attention: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor):
        feeds = {
            "input_ids": ids.numpy(),
            "attention_mask": attention.numpy(),
            "rows": rows.numpy(),
            "cols": cols.numpy(),
        }
        return torch.from_numpy(np.ascontiguousarray(self.session.run(None, feeds)[0]))


def load(source: ModelSource, int8: bool, cache: Path) -> OnnxMaskLogits:
    """The session for ``source``, exporting first if needed; a cached folder ONNX Runtime cannot open (a damaged
    disk, a file removed by hand) is exported again, once."""
    check_installed()
    folder = exported(source, int8, cache)
    try:
        return OnnxMaskLogits(folder)
    except Exception as exc:
        log.warning("the cached ONNX export in %s could not be opened (%s): exporting it again", folder, exc)
        shutil.rmtree(folder, ignore_errors=True)
        return OnnxMaskLogits(exported(source, int8, cache))


def load_model(source: ModelSource, int8: bool, cache: Path):
    """The masked LM as the engine holds it under ONNX Runtime: torch's module built on the ``meta`` device
    (config, shapes, the head's vocabulary size; no weights in memory), and the session that runs it."""
    from transformers import AutoConfig, AutoModelForMaskedLM

    # The config first: for a hub id it puts config.json in the cache, whose revision is part of the export's key.
    config = AutoConfig.from_pretrained(source.name, local_files_only=source.local_files_only)
    session = load(source, int8, cache)
    with torch.device("meta"):
        model = AutoModelForMaskedLM.from_config(config)
    return model, session
