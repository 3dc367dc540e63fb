"""The MNIST path of ``benchmarks/bnn_any_net.py`` (docs/bnn.md's MNIST tables) runs a handful
of steps end to end, so it cannot rot; needs ``$BAYESDL_MNIST_DIR`` and ``-m slow``."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _bench():
    if not os.environ.get("BAYESDL_MNIST_DIR"):
        pytest.skip("set BAYESDL_MNIST_DIR to the MNIST IDX files")
    path = ROOT / "benchmarks" / "bnn_any_net.py"
    spec = importlib.util.spec_from_file_location("bnn_any_net", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    return bench


def _rows(out: str) -> list[list[str]]:
    lines = [ln for ln in out.splitlines() if ln.startswith("| ") and not ln.startswith("|---")]
    return [[c.strip() for c in ln.strip("|").split("|")] for ln in lines[1:]]


@pytest.mark.slow
def test_classify_on_mnist_runs(capsys):
    bench = _bench()
    argv = ["classify", "--data", "mnist", "--steps", "20", "--samples", "2"]
    bench.main([*argv, "--guides", "meanfield,flipout"])
    rows = _rows(capsys.readouterr().out)
    assert [r[0] for r in rows] == ["meanfield", "flipout"]
    for r in rows:
        accuracy, nll = float(r[2]), float(r[3])
        assert accuracy > 0.5 and 0 < nll < 2.3  # 20 steps of 128 beat chance (NLL 2.30)
        assert all(0 <= float(v) <= 1 for v in r[5].split(" / "))


@pytest.mark.slow
def test_continual_on_split_mnist_runs(capsys):
    bench = _bench()
    bench.main(["continual", "--data", "mnist", "--steps", "5"])
    rows = _rows(capsys.readouterr().out)
    assert len(rows) == 2
    for r in rows:
        after = [float(v) for v in r[1].split(" / ")]
        assert len(after) == 5 and all(0 <= v <= 1 for v in after)


@pytest.mark.slow
def test_bayesian_torch_on_mnist_runs(capsys):
    bench = _bench()
    pytest.importorskip("bayesian_torch")
    bench.main(["bayesian-torch", "--data", "mnist", "--steps", "5", "--samples", "2"])
    rows = _rows(capsys.readouterr().out)
    assert len(rows) == 4 and all(0 <= float(r[2]) <= 1 for r in rows)
