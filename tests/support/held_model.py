"""The real model, held on demand: sentences with "slow" wait while the gate is shut (a model call in progress at
the moment a test chooses)."""

from __future__ import annotations

import asyncio
from typing import Any

from models.serving.client import LocalFillMask


class HeldModel(LocalFillMask):
    def __init__(self, settings: Any, *, held: bool = True) -> None:
        super().__init__(settings)
        self.gate = asyncio.Event()
        if not held:
            self.gate.set()
        self.waiting = 0  # calls that waited at the gate
        self.cancelled: list[str] = []

    async def fill_mask(self, text: str, **kwargs: Any):
        if "slow" in text and not self.gate.is_set():
            self.waiting += 1
            try:
                await self.gate.wait()
            except asyncio.CancelledError:
                self.cancelled.append(text)
                raise
        return await super().fill_mask(text, **kwargs)
