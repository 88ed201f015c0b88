"""alloop.datasets serves examples, benchmarks and tests: the core library never imports it."""

from __future__ import annotations

import ast
from pathlib import Path

import alloop

PACKAGE = Path(alloop.__file__).parent


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def test_no_core_module_imports_alloop_datasets() -> None:
    core = [p for p in PACKAGE.rglob("*.py") if "datasets" not in p.relative_to(PACKAGE).parts]
    assert len(core) > 50
    offenders = sorted(str(p.relative_to(PACKAGE)) for p in core
                       if any(m == "alloop.datasets" or m.startswith("alloop.datasets.") for m in imported_modules(p)))
    assert offenders == []
