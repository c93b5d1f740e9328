"""Where a model comes from (a local folder, the hub cache, the hub), and a one-line reason when it can't come.

Without this, a mistyped folder surfaced as "Repo id must be in the form 'repo_name'", and an unreachable hub
cost about 50 s of retried requests (the tokenizer's, then the model's) before a 130-line traceback. Here: a
name that looks like a path must be a folder; a hub id is looked up in the local cache; the hub is reached
once, with a short timeout, before transformers' retrying client is let near it; a cached model loads without
the hub when the hub is away; and every failure becomes a :class:`ModelLoadError` that names ``MODEL_NAME``
and says what to do.
"""

from __future__ import annotations

import logging
import os
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

log = logging.getLogger(__name__)

PROBE_TIMEOUT_S = 3.0
CACHE_HINT = "point MODEL_NAME at a local folder with the model, or download it once on a connected machine"


class ModelLoadError(RuntimeError):
    """The model cannot be loaded; the message is one line for the operator, naming MODEL_NAME. ``permanent``:
    trying again in this process will not help (no such model on the hub, or not cached and HF_HUB_OFFLINE=1):
    only a change of the setting will."""

    def __init__(self, message: str, *, permanent: bool = False) -> None:
        super().__init__(message)
        self.permanent = permanent

    def naming(self, setting: str) -> ModelLoadError:
        """The same error naming the setting the model's name came from (``COMPARE_MODELS``, ``--model``)."""
        return ModelLoadError(str(self).replace("MODEL_NAME", setting), permanent=self.permanent)


@dataclass(frozen=True)
class ModelSource:
    name: str
    local_files_only: bool


def looks_like_path(name: str) -> bool:
    """Hub ids are ``name`` or ``org/name``; anything else with a slash, or a leading ``.``, ``/`` or ``~``, is
    meant as a folder (``org/name`` that is a folder is found as one before this is asked)."""
    return name.startswith((".", "/", "~")) or "\\" in name or name.count("/") > 1 or name.endswith("/")


def resolve_source(name: str) -> ModelSource:
    """Decide how ``from_pretrained`` should load ``name``, or raise :class:`ModelLoadError` at once."""
    path = Path(name).expanduser()
    if path.is_dir():
        return ModelSource(str(path), local_files_only=True)
    if looks_like_path(name):
        where = path if path.is_absolute() else Path.cwd() / path
        raise ModelLoadError(f"MODEL_NAME={name}: no such folder ({where})")  # it may be copied there yet
    from huggingface_hub import constants, try_to_load_from_cache

    cached = isinstance(try_to_load_from_cache(name, "config.json"), str)
    if _offline():
        if cached:
            return ModelSource(name, local_files_only=True)
        raise ModelLoadError(
            f"MODEL_NAME={name} is not in the local Hugging Face cache and HF_HUB_OFFLINE=1 forbids downloading it: "
            f"unset HF_HUB_OFFLINE, or {CACHE_HINT}",
            permanent=True,  # the environment does not change while the process runs
        )
    endpoint = os.environ.get("HF_ENDPOINT") or constants.ENDPOINT
    problem = hub_unreachable(endpoint)
    if problem is None:
        return ModelSource(name, local_files_only=False)
    if cached:
        log.warning(
            "the Hugging Face hub (%s) is unreachable (%s): using the cached copy of %s", endpoint, problem, name
        )
        return ModelSource(name, local_files_only=True)
    raise ModelLoadError(
        f"MODEL_NAME={name} cannot be downloaded: the Hugging Face hub ({endpoint}) is unreachable ({problem}) and "
        f"the model is not in the local cache; {CACHE_HINT} (then HF_HUB_OFFLINE=1 skips the hub)"
    )


def explain(name: str, exc: BaseException) -> ModelLoadError:
    """A loading failure of transformers as one line."""
    text = " ".join(str(exc).split())
    if (
        "is not a local folder and is not a valid model identifier" in text
        or "RepositoryNotFound" in type(exc).__name__
    ):
        return ModelLoadError(
            f"MODEL_NAME={name}: no such model on the Hugging Face hub and no such local folder "
            "(check the spelling; a private model needs `hf auth login`)",
            permanent=True,
        )
    if "couldn't connect" in text.lower() or "offline mode" in text.lower():
        return ModelLoadError(
            f"MODEL_NAME={name} cannot be downloaded: the Hugging Face hub is unreachable; {CACHE_HINT}"
        )
    return ModelLoadError(f"MODEL_NAME={name} could not be loaded: {type(exc).__name__}: {text[:300]}")


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def hub_unreachable(endpoint: str) -> str | None:
    """None if a TCP connection to the hub opens within a few seconds, else why not. Behind an HTTP proxy
    the proxy decides, so nothing is probed."""
    if any(os.environ.get(v) for v in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return None
    parts = urlsplit(endpoint)
    host = parts.hostname
    if not host:
        return f"HF_ENDPOINT={endpoint} has no host"
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        with socket.create_connection((host, port), timeout=PROBE_TIMEOUT_S):
            return None
    except OSError as exc:
        return exc.strerror or type(exc).__name__


def max_sequence_length(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> int:
    """Tokens the model can read: the position table (less RoBERTa's padding offset) and the tokenizer's own
    limit, whichever is smaller."""
    config = model.config
    limits = []
    positions = getattr(config, "max_position_embeddings", None)
    if positions:
        if "roberta" in config.model_type or config.model_type in ("camembert", "longformer"):
            positions -= (config.pad_token_id or 0) + 1
        limits.append(positions)
    if tokenizer.model_max_length and tokenizer.model_max_length < 1_000_000:
        limits.append(int(tokenizer.model_max_length))
    return min(limits) if limits else 512
