"""The report floor sits above the workflows and the run folders: a named model's figures and
tour rows live in ``reports/<model>.py``, found by the name its class declares."""

from __future__ import annotations

import ast
from pathlib import Path

import bayesdl.workflows  # noqa: F401  (registers the built-in models)
from bayesdl.workflows.base import report_module
from bayesdl.workflows.registry import REGISTRY

ROOT = Path(bayesdl.workflows.__file__).resolve().parent.parent


def test_every_declared_report_has_figures_and_rows():
    declared = {name: cls for name, cls in REGISTRY.items() if cls.report is not None}
    assert {"coin", "linreg", "vae", "ss-vae", "stochastic-depth"} <= set(declared)
    for cls in declared.values():
        module = report_module(cls)
        assert module.__name__ == f"bayesdl.reports.{cls.report}"
        assert callable(module.figures) and callable(module.comparison)
        assert "figures" not in vars(cls) and "comparison" not in vars(cls)  # not twice


def _imports(path: Path) -> set[str]:
    """Every module a file imports, at its top or inside a function."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            out.add(node.module)
    return out


def test_neither_workflows_nor_fits_import_the_reports():
    below = [*(ROOT / "workflows").glob("*.py"), *(ROOT / "fits").glob("*.py")]
    assert len(below) > 10
    upward = {
        f"{p.parent.name}/{p.name}": sorted(
            m for m in _imports(p) if m.startswith("bayesdl.reports")
        )
        for p in below
    }
    assert {k: v for k, v in upward.items() if v} == {}
