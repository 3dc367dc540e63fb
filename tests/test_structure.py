"""No import cycles in the package: every import of a bayesdl module by another, at module
level or inside a function (a lazy import is still an arrow), read with ``ast`` (nothing is
imported), and the strongly connected groups of that graph (Tarjan) must be none (issue 20
removed the last three: inference/, workflows/ with bnn.py, reports/' SBC pair).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]  # the repository root is the package bayesdl
SKIP = {"tests", "benchmarks", "examples", "docs", "build", "dist"}


def modules(root: Path = ROOT) -> dict[str, Path]:
    """``bayesdl.a.b`` -> its file, for every ``.py`` of the package."""
    out = {}
    for p in sorted(root.rglob("*.py")):
        rel = p.relative_to(root)
        if rel.parts[0] in SKIP or any(part.startswith(".") for part in rel.parts):
            continue
        name = ".".join(("bayesdl", *rel.with_suffix("").parts))
        out[name.removesuffix(".__init__")] = p
    return out


def _targets(node: ast.AST, module: str, is_package: bool) -> list[str]:
    """The modules an import statement names (``from a import b``: ``a`` and ``a.b``)."""
    if isinstance(node, ast.Import):
        return [a.name for a in node.names]
    if not isinstance(node, ast.ImportFrom):
        return []
    base = node.module or ""
    if node.level:  # relative: from the module's package, one level up per extra dot
        package = module.split(".") if is_package else module.split(".")[:-1]
        package = package[: len(package) - (node.level - 1)]
        base = ".".join([*package, base] if base else package)
    return [base, *(f"{base}.{a.name}" for a in node.names)]


def import_graph(mods: dict[str, Path]) -> dict[str, set[str]]:
    """Module -> the package modules it imports, anywhere in its file."""
    graph = {m: set() for m in mods}
    for m, path in mods.items():
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            for t in _targets(node, m, path.name == "__init__.py"):
                if t in mods and t != m:
                    graph[m].add(t)
    return graph


def cycle_groups(graph: dict[str, set[str]]) -> list[set[str]]:
    """The strongly connected groups of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups = []
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            v, edges = work[-1]
            w = next(edges, None)
            if w is not None:
                if w not in index:
                    index[w] = low[w] = len(index)
                    stack.append(w)
                    on_stack.add(w)
                    work.append((w, iter(sorted(graph[w]))))
                elif w in on_stack:
                    low[v] = min(low[v], index[w])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[v])
            if low[v] == index[v]:
                group = set()
                while True:
                    w = stack.pop()
                    on_stack.discard(w)
                    group.add(w)
                    if w == v:
                        break
                if len(group) > 1:
                    groups.append(group)
    return groups


def one_cycle(graph: dict[str, set[str]], group: set[str]) -> list[str]:
    """A shortest import cycle through the group's first module: ``[a, b, ..., a]``."""
    start = min(group)
    paths = {start: [start]}
    frontier = [start]
    while frontier:
        nxt = []
        for v in frontier:
            for w in sorted(graph[v] & group):
                if w == start:
                    return [*paths[v], start]
                if w not in paths:
                    paths[w] = [*paths[v], w]
                    nxt.append(w)
        frontier = nxt
    raise AssertionError(f"{sorted(group)} is not a cycle")  # pragma: no cover


def describe(graph: dict[str, set[str]], group: set[str]) -> str:
    return f"{' -> '.join(one_cycle(graph, group))} (group of {len(group)}: {sorted(group)})"


@pytest.fixture(scope="module")
def graph():
    return import_graph(modules())


def test_the_walk_sees_module_and_function_level_imports(graph):
    """The graph is read right: a module-level and a lazy (function-level) import are arrows,
    and a made-up cycle is found and listed."""
    assert "bayesdl.fits.base" in graph["bayesdl.fits.svi"]  # module level
    assert "bayesdl.fits.rebuild" in graph["bayesdl.cli"]  # inside _run_registry
    made = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycle_groups(made) == [{"a", "b", "c"}]
    assert one_cycle(made, {"a", "b", "c"}) == ["a", "b", "c", "a"]


def test_no_import_cycle(graph):
    found = cycle_groups(graph)
    assert not found, "import cycles:\n" + "\n".join(describe(graph, g) for g in found)


def test_the_fits_floor_has_no_cycle(graph):
    """Run folders, posteriors and methods (``fits/``) import one way: no fits module is in a
    cycle."""
    for g in cycle_groups(graph):
        assert not {m for m in g if m.startswith("bayesdl.fits.")}, describe(graph, g)
