"""/compare's models: one that fails to load is not tried again at every comparison (each would wait for it
under the lineup's lock), but after a wait that doubles; the others answer meanwhile."""

from __future__ import annotations

from pathlib import Path

from bot.lineup import RETRY_FIRST_S, Lineup
from models.settings import ModelSettings


async def test_a_model_that_fails_to_load_is_tried_again_after_a_growing_wait(bert_dir: Path, tmp_path: Path) -> None:
    now = [0.0]
    missing = str(tmp_path / "no-such-model")
    lineup = Lineup([str(bert_dir), missing], ModelSettings(model_device="cpu"), clock=lambda: now[0])
    try:
        rows = await lineup.compare("The cat sat on the [MASK].")
        assert [r.error for r in rows] == [None, "model_failed"] and rows[0].masks
        assert lineup.load_attempts == 2
        for _ in range(5):  # a burst of comparisons: no new attempt
            await lineup.compare("The cat sat on the [MASK].")
        assert lineup.load_attempts == 2
        now[0] += RETRY_FIRST_S + 1
        await lineup.compare("The cat sat on the [MASK].")
        assert lineup.load_attempts == 3, "tried again once the wait is over"
        now[0] += RETRY_FIRST_S + 1  # the wait doubled: not yet
        await lineup.compare("The cat sat on the [MASK].")
        assert lineup.load_attempts == 3
        now[0] += RETRY_FIRST_S
        await lineup.compare("The cat sat on the [MASK].")
        assert lineup.load_attempts == 4
    finally:
        await lineup.close()
