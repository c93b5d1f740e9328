"""Comparing answers in Hugging Face's fill-mask schema: ids, strings and order exactly, scores closely."""

from __future__ import annotations

import pytest


def assert_same_hf(ours: list, theirs: list, *, sequence: bool = True, rel: float = 1e-4) -> None:
    """Works for one mask (a list of dicts) and several (a list of lists)."""
    assert len(ours) == len(theirs)
    if ours and isinstance(ours[0], list):
        for a, b in zip(ours, theirs, strict=False):
            assert_same_hf(a, b, sequence=sequence, rel=rel)
        return
    assert [p["token"] for p in ours] == [p["token"] for p in theirs]
    assert [p["token_str"] for p in ours] == [p["token_str"] for p in theirs]
    if sequence:
        assert [p["sequence"] for p in ours] == [p["sequence"] for p in theirs]
    # Stricter than the 1e-3 that equality with the pipeline asks for.
    assert [p["score"] for p in ours] == pytest.approx([p["score"] for p in theirs], rel=rel, abs=1e-6)
