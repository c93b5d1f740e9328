"""Where things live (STYLE.md): the engine's steps in modules of their own, typed bot_data, one error path."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from bot.context import BotData
from bot.text.render import Renderer

ROOT = Path(__file__).resolve().parents[1]


def test_the_engine_is_split_by_step_into_small_modules() -> None:
    for name in ("core", "prepare", "forward", "postprocess", "joint"):
        lines = (ROOT / "models" / "engine" / f"{name}.py").read_text().count("\n")
        assert lines < 300, f"models/engine/{name}.py has {lines} lines"


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


def _modules(package: str) -> dict[str, Path]:
    """Every module of a package, by dotted name."""
    found = {}
    for path in sorted((ROOT / package).rglob("*.py")):
        if "migrations" in path.parts:
            continue
        parts = path.relative_to(ROOT).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = path
    return found


def _imports(path: Path, known: set[str]) -> set[str]:
    """The project modules ``path`` imports, at the top or inside functions, TYPE_CHECKING blocks included."""
    import ast

    imported = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        for name in names:
            while name and name not in known:
                name = name.rpartition(".")[0]
            if name:
                imported.add(name)
    return imported


def _graph() -> dict[str, set[str]]:
    modules = {**_modules("bot"), **_modules("models")}
    known = set(modules)
    graph = {}
    for name, path in modules.items():
        # A package's __init__ is not an edge target worth a circle: only modules that hold code count.
        graph[name] = {m for m in _imports(path, known) if m != name and modules[m].name != "__init__.py"}
    return graph


def test_no_import_circles_at_all() -> None:
    """Not even through TYPE_CHECKING: a circle means two modules are one idea, or a third is missing."""
    graph = _graph()
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    circles: list[list[str]] = []

    def visit(node: str) -> None:  # Tarjan's strongly connected components
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in graph.get(node, ()):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                circles.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    assert circles == [], f"import circles: {circles}"


def test_models_never_imports_bot_and_storage_never_imports_the_rest_of_the_bot() -> None:
    graph = _graph()
    for module, imported in graph.items():
        if module.startswith("models"):
            assert not any(m.startswith("bot") for m in imported), f"{module} imports {imported}"
        if module.startswith("bot.storage"):
            outside = {m for m in imported if m.startswith("bot") and not m.startswith("bot.storage")}
            assert not outside, f"{module} imports {outside}"


def test_no_two_modules_share_a_name() -> None:
    """One name per idea: ``compare.py`` beside ``handlers/compare.py`` makes a reader open the wrong one, and so
    do a singular and its plural or a verb and its noun (``language.py`` and ``languages.py``, ``predict.py`` and
    ``predictions.py``, ``service.py`` and ``services.py``)."""
    names: dict[str, list[str]] = {}
    for package in ("bot", "models"):
        for name, path in _modules(package).items():
            if path.name != "__init__.py":
                names.setdefault(re.sub(r"(ions?|s)$", "", path.stem), []).append(name)
    twins = {stem: where for stem, where in names.items() if len(where) > 1}
    assert twins == {}, f"modules with the same name: {twins}"


def test_tests_import_helpers_never_other_tests_and_stay_readable() -> None:
    import ast

    for path in sorted((ROOT / "tests").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("tests."):
                assert not node.module.rpartition(".")[2].startswith("test_"), (
                    f"{path.relative_to(ROOT)} imports {node.module}: shared helpers belong in tests/support"
                )
        lines = path.read_text().count("\n")
        assert lines <= 500, f"{path.relative_to(ROOT)} has {lines} lines: split it by subject"


def test_the_engine_holds_its_steps_instead_of_inheriting_them() -> None:
    """Composition: each step is an object with its own attributes, so go-to-definition finds where they are set."""
    from models.engine.core import FillMaskEngine
    from models.engine.forward import Forwarder
    from models.engine.postprocess import Postprocessor
    from models.engine.prepare import Preparer

    for cls in (FillMaskEngine, Preparer, Forwarder, Postprocessor):
        assert cls.__bases__ == (object,), f"{cls.__name__} inherits {cls.__bases__}"
    hints = FillMaskEngine.__init__.__code__.co_names
    assert {"Preparer", "Forwarder", "Postprocessor"} <= set(hints)


def _literal_head(node: ast.expr) -> str | None:
    """The text a callback_data value starts with when it is written out ("guide", f"try:{n}", "more" + s)."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.JoinedStr) and node.values and isinstance(node.values[0], ast.Constant):
        return str(node.values[0].value)
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        return _literal_head(node.left)
    return None


def _registered_patterns() -> dict[str, str]:
    """app.py's CallbackQueryHandler patterns: pattern -> the module that defines it. Fails on a literal one."""
    import importlib

    tree = ast.parse((ROOT / "bot/app.py").read_text())
    modules = {
        alias.asname or alias.name: f"{node.module}.{alias.name}"
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and node.module == "bot.handlers"
        for alias in node.names
    }
    patterns = {}
    for call in ast.walk(tree):
        if isinstance(call, ast.Call) and getattr(call.func, "id", None) == "CallbackQueryHandler":
            values = [k.value for k in call.keywords if k.arg == "pattern"]
            if not values:  # the last one: any other press (an old or forged button) gets "no longer works"
                continue
            value = values[0]
            assert isinstance(value, ast.Attribute) and isinstance(value.value, ast.Name), (
                f"app.py line {call.lineno}: a button's pattern is its flow's constant, not written out here"
            )
            module = modules[value.value.id]
            patterns[getattr(importlib.import_module(module), value.attr)] = module
    return patterns


def test_each_button_contract_lives_in_one_flow() -> None:
    """A button's callback data is written out (built) only in the module whose pattern matches it; app.py
    registers those patterns by name, never as literals."""
    patterns = _registered_patterns()
    assert len(patterns) >= 12
    wrong = []
    for path in sorted((ROOT / "bot").rglob("*.py")):
        module = ".".join(path.relative_to(ROOT).with_suffix("").parts)
        for node in ast.walk(ast.parse(path.read_text())):
            values = []
            if isinstance(node, ast.keyword) and node.arg == "callback_data":
                values.append(node.value)
            if isinstance(node, ast.JoinedStr) and re.match(r"[a-z]+:", _literal_head(node) or ""):
                values.append(node)  # f"try:{n}" anywhere: a builder, whatever it is called
            for value in values:
                head = _literal_head(value)
                if head is None:
                    continue
                word = re.match(r"[a-z]+(?=:|\Z)", head)  # "try:{n}" -> try, "more" + suffix -> more
                owners = {m for p, m in patterns.items() if word and re.match(r"\\A" + word[0] + r"\b", p)}
                if owners and module not in owners:
                    wrong.append(f"{module}:{node.lineno if hasattr(node, 'lineno') else value.lineno} {head!r}")
    assert not wrong, "button data built outside the flow that owns it: " + ", ".join(wrong)


def test_the_logged_writes_live_in_their_own_module() -> None:
    """bot/storage/writes.py holds every Write and what writes them (and /forget's deletion); the repository reads."""
    import typing

    from bot.storage import repository, writes

    kinds = typing.get_args(writes.Write)
    assert len(kinds) >= 10
    assert {kind.__module__ for kind in kinds} == {"bot.storage.writes"}
    defined = {node.name for node in ast.parse((ROOT / "bot/storage/repository.py").read_text()).body
               if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef)}  # fmt: skip
    assert not defined & {"write_all", "write_user_id", "_forget", *(kind.__name__ for kind in kinds)}
    assert all(getattr(repository, kind.__name__, kind) is kind for kind in kinds), "one class per Write"
