"""``/compare``: one sentence, several models side by side (``COMPARE_MODELS``: the guide's four by default).

The models load on first use, in this process, each behind its own micro-batcher (the same ``LocalFillMask`` as
the main model in the bot), and stay loaded. All are asked at once; one that fails to load, or refuses the
sentence (too long, too many masks for it), gets its own line saying so while the others answer. Each model
reads the mask in any spelling and turns it into its own token (``[MASK]`` for BERT, ``<mask>`` for RoBERTa).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
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


@dataclass
class Row:
    label: str
    mask_token: str
    masks: list[list[dict[str, Any]]] = field(default_factory=list)  # per mask, the top words with scores
    error: str | None = None  # an error code (the renderer has the words), or None
    details: dict[str, Any] | None = None  # the error's numbers (a mask count and its limit ...)


class Lineup:
    def __init__(self, names: Sequence[str], base: ModelSettings) -> None:
        self.names = list(names)
        self._base = base
        self._models: dict[str, LocalFillMask] = {}
        self._failed: dict[str, str] = {}
        self._lock = asyncio.Lock()

    @property
    def loaded(self) -> bool:
        return all(name in self._models or name in self._failed for name in self.names)

    async def _load(self) -> None:
        async with self._lock:
            missing = [n for n in self.names if n not in self._models]
            self._failed = {}

            async def load(name: str) -> None:
                model = LocalFillMask(self._base.model_copy(update={"model_name": name}))
                try:
                    await model.start()
                except (ModelLoadError, OSError, ValueError) as exc:
                    log.error("compare: could not load %s: %s", name, exc)
                    self._failed[name] = str(exc)
                    return
                self._models[name] = model

            # One after the other: transformers' from_pretrained initialises on the "meta" device through a
            # process-wide switch, and two loads in two threads at once break each other ("Cannot copy out of
            # meta tensor").
            for name in missing:
                await load(name)

    async def compare(self, sentence: str) -> list[Row]:
        await self._load()  # the first time; later only a model that failed is tried again

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
