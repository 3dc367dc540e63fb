"""Both posterior classes keep the one contract of :class:`bayesdl.Posterior`: every member it
declares exists on the VI posterior (:class:`bayesdl.GuidePosterior`) and on the NUTS one
(:class:`bayesdl.DrawsPosterior`), and returns the type its docstring states, on a small fitted
Bayesian linear regression (the named model ``linreg``, 40 simulated points, 2 inputs)."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest
import torch

import bayesdl
from bayesdl.fits.methods import METHODS
from bayesdl.inference.mcmc import METHODS as METHOD_CHOICES

LINREG = {"simulate": 40, "dim": 2, "seed": 1}
X_NEW = torch.tensor([[0.5, -1.0], [1.0, 2.0], [0.0, 0.0]])
#: every member of the contract and the check of what it returns (post, value) -> bool
COLUMNS = {"mean", "std", "5%", "50%", "95%"}


def _tensors(d, lead=None):
    return isinstance(d, dict) and all(
        isinstance(k, str) and torch.is_tensor(v) and (lead is None or v.shape[0] == lead)
        for k, v in d.items()
    )


CONTRACT = {
    "model": lambda p, v: callable(v),
    "guide": lambda p, v: v is None if p.method == "nuts" else callable(v),
    "data": lambda p, v: isinstance(v, dict) and torch.is_tensor(v["x"]),
    "run_dir": lambda p, v: v is None or isinstance(v, Path),
    "converged": lambda p, v: v is None or isinstance(v, bool),
    "reliable": lambda p, v: v is None or isinstance(v, bool),
    "reliable_reasons": lambda p, v: isinstance(v, list) and all(isinstance(s, str) for s in v),
    "checks": lambda p, v: isinstance(v, dict) and all(isinstance(c, dict) for c in v.values()),
    "params": lambda p, v: _tensors(v),
    "elbo": lambda p, v: isinstance(v, list) and all(isinstance(e, float) for e in v),
    "history": lambda p, v: isinstance(v, list) and all(isinstance(r, dict) for r in v),
    "diagnostics": lambda p, v: isinstance(v(), dict) and v(),
    "scope": lambda p, v: hasattr(v(), "__enter__"),
    "summary": lambda p, v: all(COLUMNS <= set(r) for r in v().values()) and "theta" in v(),
    "sample": lambda p, v: _tensors(v(7), lead=7) and v(7)["theta"].shape == (7, 2),
    "predict": lambda p, v: (
        _tensors(v({"x": X_NEW}, 5), lead=5) and v({"x": X_NEW}, 5)["y"].shape == (5, 3)
    ),
    "save": None,  # below: a run folder that loads as the same class with the same summary
    "to_arviz": lambda p, v: "theta" in v().posterior,
    "fit_info": lambda p, v: isinstance(v, bayesdl.FitInfo) and v.method == p.method,
}


@pytest.fixture(scope="module")
def posteriors():
    vi = bayesdl.fit("linreg", steps=300, progress=False, **LINREG)
    nuts = bayesdl.fit(
        "linreg", method="nuts", num_samples=100, warmup=100, chains=2, progress=False, **LINREG
    )
    return {"vi": vi, "nuts": nuts}


def test_the_contract_lists_every_abstract_member():
    """A member added to the interface must be added here (and so be checked on both)."""
    assert set(bayesdl.Posterior.__abstractmethods__) <= set(CONTRACT)
    public = {n for n in vars(bayesdl.Posterior) if not n.startswith("_") and n != "method"}
    assert public == set(CONTRACT)


def test_the_method_table_names_the_option_choices_and_their_posteriors():
    assert tuple(METHODS) == METHOD_CHOICES
    assert METHODS["vi"].posterior is bayesdl.GuidePosterior
    assert METHODS["nuts"].posterior is bayesdl.DrawsPosterior
    for name, m in METHODS.items():
        assert m.name == m.posterior.method == name
        assert not inspect.isabstract(m.posterior)


@pytest.mark.parametrize("method", ["vi", "nuts"])
def test_each_posterior_returns_what_the_contract_says(posteriors, method):
    post = posteriors[method]
    assert isinstance(post, bayesdl.Posterior) and type(post) is METHODS[method].posterior
    for name, check in CONTRACT.items():
        if check is not None:
            assert check(post, getattr(post, name)), name
    default = post.sample()["theta"].shape[0]
    assert default == (1000 if method == "vi" else 2 * 100)  # the method's own default


@pytest.mark.parametrize("method", ["vi", "nuts"])
def test_each_posterior_saves_a_folder_that_loads_as_itself(posteriors, method, tmp_path):
    post = posteriors[method]
    out = post.save(tmp_path / "run")
    assert isinstance(out, Path) and out == tmp_path / "run"
    again = bayesdl.load(out)
    assert type(again) is type(post) and again.run_dir == out
    assert again.summary() == post.summary()


def test_both_methods_draw_the_exact_posterior(posteriors):
    """Both draw theta ~ N(mu_N, Sigma_N) (conjugate regression): each sample mean within 5
    standard errors of mu_N (NUTS: sd / sqrt(200) overstates its effective sample size a
    little, hence the 5)."""
    vi, nuts = posteriors["vi"], posteriors["nuts"]
    exact = vi._run.problem.extra["mu_N"], vi._run.problem.extra["Sigma_N"].diagonal().sqrt()
    for post in (vi, nuts):
        theta = post.sample()["theta"].double()
        se = exact[1] / theta.shape[0] ** 0.5
        assert ((theta.mean(0) - exact[0]).abs() < 5 * se).all(), (type(post), theta.mean(0))
