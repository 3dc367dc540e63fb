"""The engine's imports point one way: every import of ``inference/`` (function-level ones
included, read from the source) stays inside ``bayesdl.inference``, none names the package
``bayesdl.inference`` itself (its ``__init__`` imports ``train``), and they form no cycle."""

from __future__ import annotations

import ast
from pathlib import Path

ENGINE = Path(__file__).resolve().parents[2] / "inference"
PACKAGE = "bayesdl.inference"


def _imports() -> dict[str, set[str]]:
    """Module -> the ``bayesdl`` modules (and names) it imports, for every file of the engine."""
    graph = {}
    for path in sorted(ENGINE.glob("*.py")):
        name = PACKAGE if path.stem == "__init__" else f"{PACKAGE}.{path.stem}"
        targets = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("bayesdl"):
                targets.add(node.module)
                targets |= {f"{node.module}.{a.name}" for a in node.names}
            elif isinstance(node, ast.Import):
                targets |= {a.name for a in node.names if a.name.startswith("bayesdl")}
        graph[name] = targets
    return graph


def test_the_engine_imports_nothing_above_it_and_never_its_own_package():
    for module, targets in _imports().items():
        outside = {t for t in targets if not t.startswith(PACKAGE)}
        assert not outside, (module, outside)
        if module != PACKAGE:
            assert PACKAGE not in targets, f"{module} imports the package {PACKAGE}"


def test_the_engine_has_no_import_cycle():
    graph = _imports()
    edges = {m: {t for t in ts if t in graph and t != m} for m, ts in graph.items()}
    done: set[str] = set()

    def visit(m: str, path: list[str]) -> None:
        if m in path:
            raise AssertionError("import cycle: " + " -> ".join([*path[path.index(m) :], m]))
        if m in done:
            return
        for t in sorted(edges[m]):
            visit(t, [*path, m])
        done.add(m)

    for m in sorted(edges):
        visit(m, [])
    assert len(done) == len(graph) > 30
