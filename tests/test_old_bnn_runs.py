"""``bnn`` run folders written before issue 20 put the built-in network on
``bayesdl.bnn.bayesian`` (commit af75b74) load, evaluate and predict now with the numbers that
code gave, and a new fit writes the same ``summary.json`` keys and figures.

The folders (one per built-in guide, MLP 64-16-10 on the bundled digits, 40 steps) and that
code's answers are in ``tests/data/bnn_af75b74`` (``make.sh`` made them). Every number is
seeded by the run's seed, so the same arithmetic gives the same floats: such a folder is
rebuilt on the layer classes as they were (:mod:`bayesdl.workflows.bnn_legacy`, a loader that
never fits), while every new fit is on ``bayesdl.bnn.bayesian``.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

import bayesdl
from bayesdl import cli
from bayesdl.models.bayesian_net import BayesianNet

OLD = Path(__file__).parent / "data" / "bnn_af75b74"
EXPECTED = json.loads((OLD / "expected.json").read_text())
NAMES = ["meanfield", "meanfield_sampled", "dropout", "sparse_vd", "map", "mle"]
X = np.random.default_rng(0).random((3, 64)).astype(np.float32)  # as expected.py's


@pytest.fixture(autouse=True)
def one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def close(a, b, rel=1e-4):
    """Nested dicts / lists of numbers equal to ``rel`` (strings, None and keys exactly)."""
    if isinstance(b, dict):
        assert isinstance(a, dict) and set(a) == set(b), (sorted(a), sorted(b))
        for k in b:
            close(a[k], b[k], rel)
    elif isinstance(b, list) and b and isinstance(b[0], dict):
        assert isinstance(a, list) and len(a) == len(b)
        for u, v in zip(a, b, strict=True):
            close(u, v, rel)
    elif isinstance(b, list | float | int) and not isinstance(b, bool):
        got, want = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
        assert got.shape == want.shape and np.allclose(got, want, rtol=rel, atol=1e-7), (a, b)
    else:
        assert a == b, (a, b)


#: what a run records that the fixtures' code (af75b74) did not: summary.json's top-level keys
#: and config.json's args added since (each with its date's feature)
SUMMARY_SINCE = {"threads"}  # the torch threads a fit chose (issue 24)
CONFIG_SINCE = {"stack", "optim_args", "scheduler", "scheduler_args"}  # one stack; own optimizers


def keys(d):
    """The key tree of a JSON object (lists of objects by their first element)."""
    if isinstance(d, dict):
        return {k: keys(v) for k, v in d.items()}
    if isinstance(d, list) and d and isinstance(d[0], dict):
        return [keys(d[0])]
    return None


@pytest.mark.parametrize("name", NAMES)
def test_an_old_bnn_run_evaluates_and_predicts_as_before(tmp_path, name):
    run = tmp_path / name
    shutil.copytree(OLD / name, run)
    assert cli.main(["evaluate", str(run)]) == 0
    close(json.loads((run / "evaluation.json").read_text()), EXPECTED[f"{name}_evaluate"])
    np.savez(tmp_path / "x.npz", x=X)
    out = tmp_path / "pred.json"
    argv = ["predict", str(run), "--input", str(tmp_path / "x.npz"), "--output", str(out)]
    assert cli.main(argv) == 0
    close(json.loads(out.read_text()), EXPECTED[f"{name}_predict"])


@pytest.mark.parametrize("name", NAMES)
def test_an_old_bnn_run_loads(tmp_path, name):
    shutil.copytree(OLD / name, tmp_path / name)
    post = bayesdl.load(tmp_path / name)
    summary = json.loads(json.dumps(post.summary(), default=float))
    want = EXPECTED[f"{name}_summary"]
    close(
        {k: {s: v for s, v in rows.items() if s in ("mean", "std")} for k, rows in summary.items()},
        want,
    )


NEW = {
    "meanfield": ["--guide", "meanfield"],
    "meanfield_sampled": ["--guide", "meanfield", "--no-local-reparam"],
    "dropout": ["--guide", "dropout"],
    "sparse_vd": ["--guide", "sparse-vd"],
    "map": ["--guide", "map"],
    "mle": ["--guide", "mle"],
}


@pytest.mark.parametrize("name", NAMES)
def test_a_new_bnn_run_writes_the_old_summary_keys_and_figures(tmp_path, name):
    """A new run is on ``bayesdl.bnn.bayesian`` (config.json records ``stack: net``; a folder
    without it is one of the layer classes'). (Sampled weights are one site ``theta`` with
    the network's own biases: its summary has no ``params`` of the layers' biases nor the
    AutoNormal's guide-drift rows: its keys are not compared.)"""
    config = json.loads((OLD / name / "config.json").read_text())["args"]
    common = ["--hidden", "16", "--steps", "40", "--kl-warmup", "10", "--samples", "10"]
    argv = ["fit", "bnn", *NEW[name], *common, "--quiet", "--out", str(tmp_path / "r")]
    assert cli.main(argv) == 0
    new = json.loads((tmp_path / "r" / "summary.json").read_text())
    old = json.loads((OLD / name / "summary.json").read_text())
    assert set(new) - set(old) == SUMMARY_SINCE
    if name != "meanfield_sampled":
        assert keys({k: v for k, v in new.items() if k not in SUMMARY_SINCE}) == keys(old)
    assert new["figures"] == old["figures"]
    assert all((tmp_path / "r" / f).stat().st_size > 1000 for f in new["figures"])
    recorded = json.loads((tmp_path / "r" / "config.json").read_text())["args"]
    assert set(recorded) == set(config) | CONFIG_SINCE and recorded["stack"] == "net"
    again = bayesdl.load(tmp_path / "r")  # and it reloads on bayesdl.bnn.bayesian
    assert isinstance(again.model, BayesianNet)


def test_the_layers_are_not_fitted(tmp_path):
    """``--stack layers`` (hidden, recorded) names the old runs' classes: they load, never fit."""
    argv = ["fit", "bnn", "--guide", "map", "--stack", "layers", "--steps", "5", "--quiet"]
    assert cli.main([*argv, "--out", str(tmp_path / "r")]) == 2
    assert not (tmp_path / "r" / "checkpoint.pt").exists()


@pytest.mark.parametrize("name", NAMES)
def test_an_old_bnn_run_is_not_on_the_net(tmp_path, name):
    """The old folders load on the small loader of the layer classes (workflows/bnn_legacy)."""
    shutil.copytree(OLD / name, tmp_path / name)
    post = bayesdl.load(tmp_path / name)
    assert not isinstance(post.model, BayesianNet)
    assert type(post.model).__module__ == "bayesdl.workflows.bnn_legacy"
