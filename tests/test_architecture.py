"""The shape of the package, checked from the code (issue #25; docs/design.md is the map).

Imports run one way (no cycle, counting imports inside functions), no module is over 450 lines
and no class over 250, and every ``_sc_*`` name the engine uses is declared in one table.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

import smoothcache
from smoothcache.engine.state import BLOCK_STATE, BRANCH_STATE

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "smoothcache"
ADAPTERS = ROOT / "adapters"


def _modules() -> dict[str, Path]:
    """Every module of the installed package by dotted name (adapters map into it)."""
    found = {}
    for base, prefix in ((PACKAGE, "smoothcache"), (ADAPTERS, "smoothcache.adapters")):
        for path in sorted(base.rglob("*.py")):
            parts = list(path.relative_to(base).with_suffix("").parts)
            if base is PACKAGE and parts[:1] == ["adapters"]:
                continue
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join([prefix, *parts])] = path
    return found


MODULES = _modules()


def _type_checking(node: ast.AST) -> bool:
    test = getattr(node, "test", None)
    return isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(test)


def _imports(name: str, path: Path) -> set[str]:
    """The package modules ``name`` imports anywhere in its code, ``TYPE_CHECKING`` excluded."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    skipped = {id(n) for node in ast.walk(tree) if _type_checking(node) for n in ast.walk(node)}
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    targets: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            targets.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*up, base] if base else up)
            for alias in node.names:
                full = f"{base}.{alias.name}"
                targets.add(full if full in MODULES else base)
    return {t for t in targets if t in MODULES and t != name}


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle of ``graph``, or ``None``."""
    state: dict[str, int] = {}  # 1 on the path, 2 done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt) :], nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_the_walker_sees_the_package_and_finds_a_cycle() -> None:
    assert {"smoothcache.engine.hotpath", "smoothcache.adapters.dit", "smoothcache.cli"} <= set(
        MODULES
    )
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None
    # an import inside a function counts
    assert "smoothcache.engine.actions" in _imports(
        "smoothcache.engine.plans", MODULES["smoothcache.engine.plans"]
    )


def test_imports_run_one_way() -> None:
    graph = {name: _imports(name, path) for name, path in MODULES.items()}
    cycle = _cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


#: The layers of docs/design.md, bottom to top, by the first name under ``smoothcache``.
LAYERS = [
    {"errors", "jsonfile", "validation"},
    {"adapter", "hookspecs", "registry"},
    {"schedule_rules", "schedule_file", "remap", "schedule"},
    {"forecast", "patching", "clock", "watch"},
    {"binding", "lifecycle"},
    {"engine"},
    {"adapters"},
    {"measurements", "searches", "curves_file", "curves", "fitting"},
    {"recording", "calibration"},
    {"tuning", "response", "racing", "tuner", "closedloop", "sampling"},
    {"testing", "cli", "demo", "reference", "__main__"},
    {""},
]


def _layer(module: str) -> int:
    room = module.split(".")[1] if "." in module else ""
    found = [i for i, layer in enumerate(LAYERS) if room in layer]
    assert found, f"{module} is in no layer of docs/design.md: add it there and to LAYERS"
    return found[0]


def test_imports_never_climb_the_layers() -> None:
    climbs = [
        f"{name} -> {target}"
        for name, path in MODULES.items()
        for target in _imports(name, path)
        if _layer(target) > _layer(name)
    ]
    assert not climbs, "imports that climb the layers of docs/design.md: " + ", ".join(climbs)


def _sizes() -> list[tuple[str, str, int]]:
    rows = []
    for name, path in MODULES.items():
        text = path.read_text(encoding="utf-8")
        rows.append(("module", name, len(text.splitlines())))
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.ClassDef):
                rows.append(("class", f"{name}.{node.name}", node.end_lineno - node.lineno + 1))
    return rows


@pytest.mark.parametrize(("what", "limit"), [("module", 450), ("class", 250)])
def test_rooms_stay_small(what: str, limit: int) -> None:
    too_big = [(name, n) for kind, name, n in _sizes() if kind == what and n > limit]
    assert not too_big, f"{what}s over {limit} lines: {too_big}"


def test_every_engine_state_name_is_declared_once() -> None:
    used = set()
    for name, path in MODULES.items():
        if name.startswith("smoothcache.engine") or name.startswith("smoothcache.adapters"):
            used |= set(re.findall(r"\b_sc_[a-z_]+", path.read_text(encoding="utf-8")))
    declared = set(BRANCH_STATE) | set(BLOCK_STATE)
    assert used, "the walker found no state names"
    assert used <= declared, f"undeclared: {sorted(used - declared)}"
    assert declared <= used, f"declared but unused: {sorted(declared - used)}"


def test_the_public_api_is_intact() -> None:
    for name in smoothcache.__all__:
        assert getattr(smoothcache, name) is not None


def test_every_package_is_listed_for_the_wheel() -> None:
    """pyproject.toml lists packages explicitly (adapters and schedules map into the package):
    a new subpackage missing there would be absent from an installed wheel."""
    text = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    listing = text.split("packages = [", 1)[1].split("]", 1)[0]
    listed = set(re.findall(r'"(smoothcache[a-z_.]*)"', listing))
    packages = {
        ".".join(["smoothcache", *init.parent.relative_to(PACKAGE).parts])
        for init in PACKAGE.rglob("__init__.py")
    }
    assert packages <= listed, sorted(packages - listed)
