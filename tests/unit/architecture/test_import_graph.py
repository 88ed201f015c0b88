"""The shape of the code: no import cycles in alloop/, the core knows no labeling tool.

The graph is read from the source (``ast``), so every import counts: module level, inside
functions (lazy imports) and under ``if TYPE_CHECKING:``. A cycle through a lazy import still
means two modules that cannot be understood (or moved) one without the other.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
PACKAGES = ("alloop", "connectors")


def _modules() -> dict[str, Path]:
    mods = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            mods[".".join(parts)] = path
    return mods


def import_graph() -> dict[str, set[str]]:
    """Module -> the project modules it imports (a package import counts as its ``__init__``)."""
    mods = _modules()

    def resolve(name: str) -> str | None:
        while name and name not in mods:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, set[str]] = {m: set() for m in mods}
    for mod, path in mods.items():
        package = mod if path.name == "__init__.py" else mod.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    up = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(up + ([base] if base else []))
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in mods else base for a in node.names]
            for t in targets:
                found = resolve(t)
                if found is not None and found != mod:
                    graph[mod].add(found)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_the_cycle_finder_finds_a_cycle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(graph) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_the_graph_sees_lazy_and_type_checking_imports():
    graph = import_graph()
    assert "alloop.protocols" in graph["alloop.loop.collect"]  # module level
    assert "alloop.teachers.base" in graph["alloop.loop.data"]  # inside a function
    assert "alloop.workspace" in graph["alloop.loop.env"]  # under TYPE_CHECKING


def test_no_import_cycles():
    found = cycles(import_graph())
    assert found == [], "import cycles (each line: modules that import each other, directly or not):\n" + \
        "\n".join(" <-> ".join(c) for c in found)


#: the only modules that may import the Label Studio package: itself, and the CLI command that starts a server
MAY_IMPORT_LABEL_STUDIO = ("connectors.label_studio", "alloop.cli.labelstudio")


@pytest.mark.parametrize("package", PACKAGES)
def test_the_core_does_not_import_label_studio(package):
    graph = import_graph()
    offenders = sorted(
        mod for mod, deps in graph.items()
        if mod.split(".")[0] == package and not mod.startswith(MAY_IMPORT_LABEL_STUDIO)
        and any(d.startswith("connectors.label_studio") for d in deps)
    )
    assert offenders == []


def test_the_core_does_not_import_any_connector():
    """alloop/ speaks alloop.protocols; connectors are found through entry points."""
    graph = import_graph()
    offenders = sorted(
        (mod, dep) for mod, deps in graph.items() if mod.startswith("alloop") and mod not in MAY_IMPORT_LABEL_STUDIO
        for dep in deps if dep.startswith("connectors")
    )
    assert offenders == []
