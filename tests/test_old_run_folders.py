"""Run folders written by an older bayesdl (commit 50c61cd, before issue 20 moved run folders
into ``fits/``) load, evaluate, predict and resume now, with the numbers that code gave.

The folders and that code's answers are in ``tests/data/main_50c61cd`` (its README says how
they were made). Every number is seeded (the run's seed, or ``pyro.set_rng_seed``), so the same
arithmetic gives the same floats; the tolerance only absorbs float32 summation order.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch

import bayesdl
from bayesdl import cli

OLD = Path(__file__).parent / "data" / "main_50c61cd"
EXPECTED = json.loads((OLD / "expected.json").read_text())
LINREG = ["--simulate", "40", "--dim", "2", "--seed", "1", "--checkpoint-every", "100"]


def model(x, y=None):
    w = pyro.sample("w", dist.Normal(0.0, 1.0))
    with pyro.plate("data", len(x)):
        pyro.sample("y", dist.Normal(w * x, 1.0), obs=y)


def close(a, b, rel=1e-4):
    """Nested dicts / lists of numbers equal to ``rel`` (strings and keys exactly)."""
    if isinstance(b, dict):
        assert isinstance(a, dict) and set(a) == set(b), (a, b)
        for k in b:
            close(a[k], b[k], rel)
    elif isinstance(b, list) and b and isinstance(b[0], str):
        assert list(a) == b
    elif isinstance(b, list | float | int):
        got, want = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
        assert got.shape == want.shape and np.allclose(got, want, rtol=rel, atol=1e-7), (a, b)
    else:
        assert a == b, (a, b)


@pytest.fixture
def runs(tmp_path):
    """Copies of the old folders (evaluate writes into its run folder)."""
    for name in ("vi", "nuts", "user"):
        shutil.copytree(OLD / name, tmp_path / name)
    return tmp_path


@pytest.mark.parametrize("name", ["vi", "nuts"])
def test_an_old_run_evaluates_and_predicts_as_before(runs, name, capsys):
    assert cli.main(["evaluate", str(runs / name)]) == 0
    close(json.loads((runs / name / "evaluation.json").read_text()), EXPECTED[f"{name}_evaluate"])
    np.savez(runs / "new.npz", x=np.array([[0.5, -1.0], [1.0, 2.0]], dtype=np.float32))
    out = runs / "pred.json"
    assert (
        cli.main(
            ["predict", str(runs / name), "--input", str(runs / "new.npz"), "--output", str(out)]
        )
        == 0
    )
    close(json.loads(out.read_text()), EXPECTED[f"{name}_predict"])


@pytest.mark.parametrize("name", ["vi", "nuts"])
def test_an_old_run_loads_as_its_method_posterior(runs, name):
    post = bayesdl.load(runs / name)
    kind = bayesdl.GuidePosterior if name == "vi" else bayesdl.DrawsPosterior
    assert isinstance(post, kind) and isinstance(post, bayesdl.Posterior)
    close(json.loads(json.dumps(post.summary(), default=float)), EXPECTED[f"{name}_summary"])


def test_an_old_python_run_with_its_data_reopens_with_the_model(runs):
    post = bayesdl.load(runs / "user", model=model)
    close(post.summary(), EXPECTED["user_summary"])
    pyro.set_rng_seed(0)
    mean = post.predict({"x": torch.tensor([0.5, -1.0, 2.0])}, num_samples=200)["y"].mean(0)
    close(mean.tolist(), EXPECTED["user_predict_mean"])


def test_an_old_run_resumes_to_where_the_old_code_got(runs, capsys):
    argv = ["fit", "linreg", *LINREG, "--steps", "300", "--quiet", "--out", str(runs / "vi")]
    assert cli.main([*argv, "--resume"]) == 0
    summary = json.loads((runs / "vi" / "summary.json").read_text())
    want = EXPECTED["vi_resumed"]
    assert summary["steps"] == want["steps"] == 300
    close(summary["final_elbo"], want["final_elbo"])
    close(summary["posterior"], want["posterior"])
