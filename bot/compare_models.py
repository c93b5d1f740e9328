"""``/compare``: one sentence, several models side by side (``COMPARE_MODELS``: the guide's four by default).

The models load on first use, in this process, each behind its own micro-batcher (the same ``LocalFillMask`` as
the main model in the bot), in the main model's precision. All are asked at once; one that fails to load, or
refuses the sentence (too long, too many masks for it), gets its own line saying so while the others answer. Each
model reads the mask in any spelling and turns it into its own token (``[MASK]`` for BERT, ``<mask>`` for
RoBERTa). The bot's own model is not loaded twice: a compare model that is the same one (``bert-base-uncased``
and ``google-bert/bert-base-uncased``) is answered by it.

Memory: together they stay within ``COMPARE_MEMORY_MB``. Going through ``COMPARE_MODELS`` in order, a model is
loaded if it fits next to those already loaded (its weights files tell its size before loading; after loading
the engine's own count is kept); to make room, the least recently used models this compare does not need are
closed. One that still does not fit answers with a line saying so, while the others answer: the first models
of the list that fit are the ones people see, the same every time (no loading and closing at every compare).
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from models.engine.errors import FillMaskError
from models.engine.loading import ModelLoadError, looks_like_path
from models.engine.memory import estimate_bytes
from models.serving.client import FillMaskService, LocalFillMask
from models.settings import ModelSettings

log = logging.getLogger(__name__)

# Names as people know them, by the model's type in its config.
KNOWN_NAMES = {
    "bert": "BERT", "roberta": "RoBERTa", "distilbert": "DistilBERT", "albert": "ALBERT", "electra": "ELECTRA",
    "xlm-roberta": "XLM-RoBERTa", "deberta-v2": "DeBERTa", "camembert": "CamemBERT", "modernbert": "ModernBERT",
}  # fmt: skip
TOP_K = 3
RETRY_FIRST_S = 30.0  # a model that failed to load is tried again after this long, doubling to RETRY_MAX_S
RETRY_MAX_S = 3600.0


@dataclass
class Row:
    label: str
    mask_token: str
    masks: list[list[dict[str, Any]]] = field(default_factory=list)  # per mask, the top words with scores
    error: str | None = None  # an error code (the renderer has the words), or None
    details: dict[str, Any] | None = None  # the error's numbers (a mask count and its limit ...)


@dataclass
class Failure:
    """A model that failed to load, and when it may be tried again."""

    error: str
    retry_at: float
    delay: float


MB = 1024 * 1024


class ComparedModels:
    def __init__(
        self,
        names: Sequence[str],
        base: ModelSettings,
        *,
        clock: Callable[[], float] = time.monotonic,
        memory_mb: float | None = None,
        main: FillMaskService | None = None,
    ) -> None:
        self.names = list(names)
        self._base = base
        self._clock = clock
        self._models: dict[str, LocalFillMask] = {}
        self._failed: dict[str, Failure] = {}
        self._lock = asyncio.Lock()
        self.load_attempts = 0
        # The budget (None: no limit), the bytes each loaded (or once loaded) model takes, and when each was last
        # asked (for choosing which to close).
        self.memory_bytes = None if memory_mb is None or memory_mb <= 0 else int(memory_mb * MB)
        self.sizes: dict[str, int] = {}
        self._used: dict[str, float] = {}
        self._too_big: set[str] = set()
        self._main = main if isinstance(main, LocalFillMask) else None
        self.evictions = 0

    @property
    def loaded(self) -> bool:
        return all(
            name in self._models or name in self._failed or name in self._too_big or self._is_main(name)
            for name in self.names
        )

    @property
    def loaded_bytes(self) -> int:
        return sum(self.sizes.get(name, 0) for name in self._models)

    def _is_main(self, name: str) -> bool:
        """Whether ``name`` is the bot's own model, loaded in this process."""
        main = self._main
        return main is not None and main.engine is not None and same_model(name, main.model_name)

    def _room_for(self, name: str, size: int | None, keep: set[str]) -> bool:
        """Whether a model of ``size`` bytes (None: not known before loading) fits the budget, after closing the
        least recently used loaded models outside ``keep``."""
        if self.memory_bytes is None or size is None:
            return True
        if size > self.memory_bytes:
            return False
        for victim in sorted((n for n in self._models if n not in keep), key=lambda n: self._used.get(n, 0.0)):
            if self.loaded_bytes + size <= self.memory_bytes:
                break
            self._evict(victim)
        return self.loaded_bytes + size <= self.memory_bytes

    def _evict(self, name: str) -> None:
        model = self._models.pop(name)
        self.evictions += 1
        log.info("compare: closing %s (%.0f MB) to stay within COMPARE_MEMORY_MB", name, self.sizes.get(name, 0) / MB)

        async def close() -> None:  # answers what it holds, then lets the engine and its thread go
            await model.close()
            if model.engine is not None:
                model.engine.model_thread.shutdown(wait=False)
                model.engine = None

        task = asyncio.ensure_future(close())
        task.add_done_callback(lambda t: t.cancelled() or t.exception())

    def _due(self) -> list[str]:
        """Models not loaded that may be tried now: never tried, or failed long enough ago. A model that fails to
        load (a typo in COMPARE_MODELS, the hub out of reach) is tried again after 30 s, then twice as long each
        time up to an hour: not at every /compare, each of which would wait for it under the lock."""
        now = self._clock()
        return [
            n
            for n in self.names
            if n not in self._models
            and not self._is_main(n)
            and (n not in self._failed or self._failed[n].retry_at <= now)
        ]

    async def _load(self) -> None:
        if not self._due():
            return
        async with self._lock:
            keep: set[str] = set()
            too_big: set[str] = set()  # this round's; replaces the last round's at the end (others read it meanwhile)

            async def load(name: str) -> None:
                known = self.sizes.get(name)
                if known is None:
                    known = await asyncio.to_thread(estimate_bytes, name, self._base.model_dtype)
                if not self._room_for(name, known, keep):
                    too_big.add(name)
                    return
                # On torch whatever MODEL_RUNTIME says: an ONNX export on first use would hold a compare for a
                # minute and need the fp32 weights twice over in a second process, on the server it is sized for.
                model = LocalFillMask(self._base.model_copy(update={"model_name": name, "model_runtime": "torch"}))
                self.load_attempts += 1
                try:
                    await model.start()
                except (ModelLoadError, OSError, ValueError) as exc:
                    if isinstance(exc, ModelLoadError):
                        exc = exc.naming("COMPARE_MODELS")  # the setting that named it, not the bot's MODEL_NAME
                    if getattr(exc, "permanent", False):  # no such folder or model: waiting will not bring it
                        log.error("compare: %s; it stays out of /compare until the setting changes", exc)
                        self._failed[name] = Failure(str(exc), math.inf, math.inf)
                        return
                    before = self._failed.get(name)
                    delay = min(RETRY_MAX_S, before.delay * 2) if before else RETRY_FIRST_S
                    what = exc if isinstance(exc, ModelLoadError) else f"could not load {name}: {exc}"
                    log.error("compare: %s (trying again in %.0f s)", what, delay)
                    self._failed[name] = Failure(str(exc), self._clock() + delay, delay)
                    return
                self._failed.pop(name, None)
                self.sizes[name] = model.engine.memory_bytes() if model.engine is not None else 0
                self._models[name] = model
                keep.add(name)
                if not self._room_for(name, 0, keep):  # measured bigger than its files said: it does not fit
                    self._evict(name)
                    too_big.add(name)

            # One after the other, in COMPARE_MODELS's order (the first that fit are kept): transformers'
            # from_pretrained initialises on the "meta" device through a process-wide switch, and two loads in two
            # threads at once break each other ("Cannot copy out of meta tensor").
            for name in self.names:
                if name in self._models:
                    keep.add(name)
                elif name in self._due():  # (again: one closed to make room just now is due too)
                    await load(name)
            self._too_big = too_big

    async def compare(self, sentence: str) -> list[Row]:
        await self._load()  # the first time; later only a model that failed, once its wait is over

        async def one(name: str) -> Row:
            model = self._main if self._is_main(name) else self._models.get(name)
            if model is None:
                if name in self._too_big:
                    details = {"limit": round(self.memory_bytes / MB) if self.memory_bytes else None}
                    return Row(label=_short(name), mask_token="", error="compare_memory", details=details)
                return Row(label=_short(name), mask_token="", error="model_failed")
            self._used[name] = self._clock()
            row = Row(label=label_of(model), mask_token=model.mask_token)
            try:
                result = await model.fill_mask(sentence, top_k=TOP_K, words_only=True)
            except FillMaskError as exc:
                row.error, row.details = exc.code, exc.details
                return row
            row.masks = [
                [{"word": p.token_str.strip() or p.token_str, "score": p.score} for p in mask] for mask in result.masks
            ]
            return row

        return list(await asyncio.gather(*(one(name) for name in self.names)))

    async def close(self) -> None:
        for model in self._models.values():
            await model.close()
        self._models.clear()


def same_model(a: str, b: str) -> bool:
    """The same folder or hub id, or a legacy hub id and its organisation's copy (``bert-base-uncased`` is
    ``google-bert/bert-base-uncased``)."""
    a, b = a.rstrip("/"), b.rstrip("/")
    if a == b:
        return True
    short, long = sorted((a, b), key=lambda n: n.count("/"))
    return "/" not in short and long.count("/") == 1 and not looks_like_path(long) and long.split("/")[1] == short


def row_error_words(renderer: Any, row: Row) -> str | None:
    """What a model's row says instead of words, in /compare and in the playground's compare tab alike."""
    if row.error is None:
        return None
    if row.error == "model_failed":  # not "offline for a moment": this one model could not be loaded
        return renderer.text("compare_model_failed")
    if row.error == "compare_memory":
        return renderer.text("compare_no_memory", limit=(row.details or {}).get("limit"))
    return renderer.error(row.error, row.details, plain=True)


def label_of(model: LocalFillMask) -> str:
    model_type = getattr(getattr(model.engine, "model", None), "config", None)
    model_type = getattr(model_type, "model_type", "")
    return KNOWN_NAMES.get(model_type, _short(model.model_name))


def _short(name: str) -> str:
    return name.rstrip("/").rsplit("/", 1)[-1]
