"""README's set-up works on a laptop as written, and the torch floor is one transformers accepts."""

from __future__ import annotations

import re
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]


def _first_screen_commands() -> list[str]:
    readme = (ROOT / "README.md").read_text()
    block = re.search(r"```bash\n(.*?)```", readme, re.DOTALL)
    assert block, "README starts with a bash block: set up, run"
    return [line.split("#")[0].strip() for line in block.group(1).splitlines() if line.strip()]


def test_readme_sets_up_cpu_torch_before_the_project() -> None:
    setup, run = _first_screen_commands()
    steps = [s.strip() for s in setup.split("&&")]
    torch_step = next(i for i, s in enumerate(steps) if "pip install torch" in s)
    project_step = next(i for i, s in enumerate(steps) if "pip install -e" in s)
    assert torch_step < project_step, "once CUDA torch is in, installing CPU torch afterwards does nothing"
    assert "download.pytorch.org/whl/cpu" in steps[torch_step]
    assert run.endswith("mlm-bot run")


def _floor(requirements: list[str], name: str, extra: str | None = None) -> Version:
    for line in requirements:
        req = Requirement(line)
        if req.name != name:
            continue
        if extra is not None and (req.marker is None or not req.marker.evaluate({"extra": extra})):
            continue
        return min(Version(s.version) for s in req.specifier if s.operator in (">=", "=="))
    raise AssertionError(f"no requirement on {name}")


def test_torch_floor_is_what_transformers_accepts() -> None:
    ours = _floor(metadata.requires("mlm-bot") or [], "torch")
    theirs = _floor(metadata.requires("transformers") or [], "torch", extra="torch")
    assert ours >= theirs, f"transformers disables torch below {theirs}; the project asks for torch>={ours}"
