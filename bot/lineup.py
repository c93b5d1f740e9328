"""``/compare``: one sentence, several models side by side (``COMPARE_MODELS``: the guide's four by default).

The models load on first use, in this process, each behind its own micro-batcher (the same ``LocalFillMask`` as
the main model in the bot), and stay loaded. All are asked at once; one that fails to load, or refuses the
sentence (too long, too many masks for it), gets its own line saying so while the others answer. Each model
reads the mask in any spelling and turns it into its own token (``[MASK]`` for BERT, ``<mask>`` for RoBERTa).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from models.engine.errors import FillMaskError
from models.engine.loading import ModelLoadError
from models.serving.client import LocalFillMask
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


class Lineup:
    def __init__(
        self, names: Sequence[str], base: ModelSettings, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.names = list(names)
        self._base = base
        self._clock = clock
        self._models: dict[str, LocalFillMask] = {}
        self._failed: dict[str, Failure] = {}
        self._lock = asyncio.Lock()
        self.load_attempts = 0

    @property
    def loaded(self) -> bool:
        return all(name in self._models or name in self._failed for name in self.names)

    def _due(self) -> list[str]:
        """Models not loaded that may be tried now: never tried, or failed long enough ago. A model that fails to
        load (a typo in COMPARE_MODELS, the hub out of reach) is tried again after 30 s, then twice as long each
        time up to an hour: not at every /compare, each of which would wait for it under the lock."""
        now = self._clock()
        return [
            n
            for n in self.names
            if n not in self._models and (n not in self._failed or self._failed[n].retry_at <= now)
        ]

    async def _load(self) -> None:
        if not self._due():
            return
        async with self._lock:
            missing = self._due()

            async def load(name: str) -> None:
                model = LocalFillMask(self._base.model_copy(update={"model_name": name}))
                self.load_attempts += 1
                try:
                    await model.start()
                except (ModelLoadError, OSError, ValueError) as exc:
                    before = self._failed.get(name)
                    delay = min(RETRY_MAX_S, before.delay * 2) if before else RETRY_FIRST_S
                    log.error("compare: could not load %s: %s (trying again in %.0f s)", name, exc, delay)
                    self._failed[name] = Failure(str(exc), self._clock() + delay, delay)
                    return
                self._failed.pop(name, None)
                self._models[name] = model

            # One after the other: transformers' from_pretrained initialises on the "meta" device through a
            # process-wide switch, and two loads in two threads at once break each other ("Cannot copy out of
            # meta tensor").
            for name in missing:
                await load(name)

    async def compare(self, sentence: str) -> list[Row]:
        await self._load()  # the first time; later only a model that failed, once its wait is over

        async def one(name: str) -> Row:
            model = self._models.get(name)
            if model is None:
                return Row(label=_short(name), mask_token="", error="model_failed")
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


def label_of(model: LocalFillMask) -> str:
    model_type = getattr(getattr(model.engine, "model", None), "config", None)
    model_type = getattr(model_type, "model_type", "")
    return KNOWN_NAMES.get(model_type, _short(model.model_name))


def _short(name: str) -> str:
    return name.rstrip("/").rsplit("/", 1)[-1]
