"""A plain (non-editable) install works: the wheel carries every subpackage, the templates and the migrations.

The wheel is built from this checkout and installed, without its dependencies, into a fresh virtual
environment that borrows the test environment's packages (torch, transformers, ...) through a ``.pth`` line.
That borrowed folder's own ``.pth`` files are not run, so the editable install of this checkout stays out of
sight: ``bot``, ``models`` and ``templates`` can only come from the wheel. The commands run from an empty
working directory, as a user's would."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Built from a copy of the project's files, so a ``build/`` folder left in the checkout by an earlier build
    cannot hide a file the packaging metadata forgets (setuptools reuses it)."""
    source = tmp_path_factory.mktemp("source")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    for name in ("bot", "models", "templates"):
        shutil.copytree(ROOT / name, source / name, ignore=shutil.ignore_patterns("__pycache__"))
    out = tmp_path_factory.mktemp("dist")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out), str(source)],
        check=True,
        capture_output=True,
        text=True,
    )
    (built,) = out.glob("mlm_bot-*.whl")
    return built


@pytest.fixture(scope="module")
def installed(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The fresh environment's bin folder, with the wheel installed in it."""
    venv = tmp_path_factory.mktemp("venv")
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    bin_dir = venv / "bin"
    purelib = Path(
        subprocess.run(
            [str(bin_dir / "python"), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
    )
    (purelib / "borrowed.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run(
        [str(bin_dir / "python"), "-m", "pip", "install", "--no-deps", "--no-index", "-q", str(wheel)],
        check=True,
        capture_output=True,
        text=True,
    )
    return bin_dir


def test_wheel_holds_every_package_the_templates_and_the_migrations(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    sources = {p.relative_to(ROOT).as_posix() for d in ("bot", "models") for p in (ROOT / d).rglob("*.py")}
    assert sources - names == set(), "modules missing from the wheel"
    templates = {p.relative_to(ROOT).as_posix() for p in (ROOT / "templates").rglob("*") if p.is_file()}
    templates = {t for t in templates if "__pycache__" not in t}
    assert templates - names == set(), "templates missing from the wheel"
    assert "bot/migrations/script.py.mako" in names


def _run(bin_dir: Path, cwd: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("MODEL_", "DATABASE_", "PYTHONPATH"))}
    return subprocess.run(
        [str(bin_dir / "mlm-bot"), *args],
        cwd=cwd,
        env={**environ, **env, "HF_HUB_OFFLINE": "1"},
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_installed_command_migrates_and_predicts_from_another_folder(
    installed: Path, bert_dir: Path, tmp_path: Path
) -> None:
    where = tmp_path / "elsewhere"
    where.mkdir()
    code = "import bot, models, templates; print(bot.__file__, models.__file__, templates.__file__)"
    origin = subprocess.run([str(installed / "python"), "-c", code], cwd=where, capture_output=True, text=True)
    assert origin.returncode == 0, origin.stderr
    assert str(ROOT) not in origin.stdout, "the installed package must not come from the checkout"

    database = where / "data" / "log.sqlite3"
    upgraded = _run(installed, where, "db", "upgrade", DATABASE_URL=f"sqlite+aiosqlite:///{database}")
    assert upgraded.returncode == 0, upgraded.stderr
    assert database.exists()

    predicted = _run(installed, where, "predict", "the cat sat on the [MASK] .", "--model", str(bert_dir), "--json")
    assert predicted.returncode == 0, predicted.stderr
    assert '"token_str"' in predicted.stdout

    # The shipped guide, read and checked from the installed package (its Markdown pages are package data).
    checked = _run(installed, where, "guides", "check")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "1 guides, 18 pages checked (shipped): ok" in checked.stdout
    listed = _run(installed, where, "guides", "list")
    assert str(ROOT) not in listed.stdout and "templates/guides/mlm" in listed.stdout
