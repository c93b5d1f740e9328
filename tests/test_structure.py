"""Where things live (STYLE.md): the engine's steps in modules of their own, typed bot_data, one error path."""

from __future__ import annotations

from pathlib import Path

from bot.render import Renderer
from bot.services import BotData

ROOT = Path(__file__).resolve().parents[1]


def test_the_engine_is_split_by_step_into_small_modules() -> None:
    for name in ("engine", "prepare", "forward", "postprocess", "joint"):
        lines = (ROOT / "models" / f"{name}.py").read_text().count("\n")
        assert lines < 300, f"models/{name}.py has {lines} lines"


def test_handlers_get_their_services_from_typed_bot_data() -> None:
    sources = "".join(p.read_text() for p in (ROOT / "bot").rglob("*.py"))
    assert 'bot_data["' not in sources and "bot_data.get(" not in sources
    data = BotData()
    assert data.posts == {}


def test_one_path_turns_error_details_into_words() -> None:
    renderer = Renderer()
    details = {"count": 7, "limit": 5}
    assert "7 masks; I can fill up to 5" in renderer.error("too_many_masks", details)
    assert "7 masks" in renderer.error("too_many_masks", details, plain=True)
    assert renderer.inline_refusal("too_many_masks", details) == "⚠️ 7 masks: I fill up to 5"
    assert "try again in 12 s" in renderer.inline_refusal("rate_limited", {"retry_after": 12})
    sources = "".join(p.read_text() for p in (ROOT / "bot" / "handlers").rglob("*.py"))
    assert 'html("error"' not in sources, "handlers go through Renderer.error"
