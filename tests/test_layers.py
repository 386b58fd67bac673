"""The package layering of ARCHITECTURE.md, read from the module-level imports of `src/drivemtl`.

Imports point downwards: the config machinery knows no layer, the lower layers never import the
upper ones at module level, and no two packages import each other (no import circle). A plug-in
lookup inside a function (`build_model` finding the task plug-ins by name) is not a module-level
import and is allowed.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import drivemtl

ROOT = Path(drivemtl.__file__).resolve().parent
BASE = {"errors", "log", "outputs", "registry"}
ALLOWED = {
    "config": BASE,
    "structures": BASE,
    "ops": BASE,
    "data": BASE | {"config", "structures"},
    "models": BASE | {"config", "ops", "structures"},
    "tasks": BASE | {"config", "ops", "structures", "models"},
}


def package_imports() -> dict[str, set[str]]:
    """Package -> other drivemtl packages its modules import at module level."""
    graph: dict[str, set[str]] = defaultdict(set)
    for path in ROOT.rglob("*.py"):
        parts = path.relative_to(ROOT).parts
        package = parts[0] if len(parts) > 1 else parts[0].removesuffix(".py")
        for node in ast.parse(path.read_text(encoding="utf-8")).body:
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("drivemtl."):
                target = node.module.split(".")[1]
                if target != package:
                    graph[package].add(target)
    return graph


def test_lower_layers_import_only_what_lies_below() -> None:
    graph = package_imports()
    for package, allowed in ALLOWED.items():
        extra = graph.get(package, set()) - allowed
        assert not extra, f"drivemtl.{package} imports {sorted(extra)} at module level"


def test_no_import_circle_between_packages() -> None:
    graph = package_imports()
    state: dict[str, int] = {}

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                raise AssertionError("import circle: " + " -> ".join([*path, node, nxt]))
            if nxt not in state:
                visit(nxt, [*path, node])
        state[node] = 2

    for package in sorted(graph):
        if package not in state:
            visit(package, [])


def test_the_checker_sees_real_imports() -> None:
    graph = package_imports()
    assert "models" in graph["tasks"] and "config" in graph["models"]
    assert graph["config"] <= BASE
