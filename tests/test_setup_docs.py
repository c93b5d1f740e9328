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


README_MAX_BYTES = 12 * 1024


def test_readme_is_short_and_its_first_screen_has_setup_run_and_tests() -> None:
    readme = (ROOT / "README.md").read_text()
    assert len(readme.encode()) <= README_MAX_BYTES, f"README is {len(readme.encode())} bytes: move detail to docs/"
    first_screen = readme[: readme.index("\n---\n")]
    assert "mlm-bot run" in first_screen and "python -m pytest" in first_screen
    assert "mlm-bot predict" in first_screen, "a way to see the model work without a Telegram token"
    setup, _ = _first_screen_commands()
    assert "[test]" not in setup, "the set-up installs what the bot needs; the test command adds the test tools"


def test_ci_runs_the_test_command_readme_gives() -> None:
    readme = (ROOT / "README.md").read_text()
    assert ".venv/bin/python -m pytest" in readme
    assert "\npython -m pytest -q\n" in (ROOT / ".ci" / "run").read_text()


def test_every_relative_link_in_readme_and_docs_leads_somewhere() -> None:
    for page in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", page.read_text()):
            if "://" in target or target.startswith("mailto:"):
                continue
            assert (page.parent / target).exists(), f"{page.name} links to {target}, which does not exist"
        assert not re.search(r"\]\(#", page.read_text()) or page.name == "README.md", f"{page.name}: a dead anchor"


def test_every_setting_is_documented_and_in_env_example() -> None:
    from bot.config import BotSettings

    documented = (ROOT / "docs" / "configuration.md").read_text()
    example = (ROOT / ".env.example").read_text()
    for name, field in BotSettings.model_fields.items():
        variable = (field.alias or name).upper()
        assert f"`{variable}`" in documented, f"{variable} is missing from docs/configuration.md"
        assert re.search(rf"(?m)^#?\s*{variable}=", example), f"{variable} is missing from .env.example"


def test_the_defaults_docs_configuration_shows_are_the_settings_own() -> None:
    """Defaults are declared once, in the settings classes; the table in docs/configuration.md must agree."""
    from bot.config import BotSettings

    fields = {(field.alias or name).upper(): field for name, field in BotSettings.model_fields.items()}
    checked = 0
    for row in (ROOT / "docs" / "configuration.md").read_text().splitlines():
        cells = [cell.strip() for cell in row.strip().strip("|").split("|")]
        if len(cells) < 3 or not cells[0].startswith("`"):
            continue
        variables = re.findall(r"`([A-Z_]+)`", cells[0])
        shown = re.findall(r"`([^`]*)`", cells[1])
        words = cells[1].strip().lower()
        for n, variable in enumerate(variables):
            if variable not in fields:  # LOG_LEVEL, LOG_FORMAT: the command line's, read before the settings
                continue
            default = fields[variable].default
            if len(shown) == len(variables):
                value = shown[n]
                if isinstance(default, bool):
                    assert value == str(int(default)), (variable, value, default)
                elif isinstance(default, (int, float)):
                    assert float(value) == float(default), (variable, value, default)
                elif default is None:  # "let the bot decide"
                    assert value == "auto", (variable, value, default)
                elif isinstance(default, tuple):  # a comma-separated list
                    assert value == ",".join(default), (variable, value, default)
                else:
                    assert value == str(default), (variable, value, default)
                checked += 1
            elif words == "unset":
                assert default is None, (variable, default)
                checked += 1
            elif words == "empty":
                assert not default, (variable, default)
                checked += 1
    assert checked >= 25, f"only {checked} defaults could be read from the table"
