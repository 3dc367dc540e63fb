"""Where a fit starts, as a Pyro user writes it: ``init_value={"lam": 0.8}`` and Pyro's own
strategies (``init_to_value``, ``init_to_median``, ...), for autoguides and for NUTS."""

from __future__ import annotations

import json

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer.autoguide import init_to_mean, init_to_median, init_to_sample, init_to_value

import bayesdl

COUNTS = torch.tensor([0.0, 1.0, 2.0, 0.0, 1.0, 3.0, 1.0, 0.0])


def poisson(counts=None):
    """lam ~ Gamma(2, 2), counts_i ~ Poisson(lam)."""
    lam = pyro.sample("lam", dist.Gamma(2.0, 2.0))
    with pyro.plate("data", len(COUNTS)):
        pyro.sample("counts", dist.Poisson(lam), obs=counts)


def _start(tmp_path, **kw):
    """The autoguide's median of lam after one step of lr 1e-9: where it started."""
    post = bayesdl.fit(
        poisson, data={"counts": COUNTS}, guide="auto-normal", steps=1, lr=1e-9, seed=0,
        progress=False, out=tmp_path, **kw,
    )  # fmt: skip
    return post.summary()["lam"]["50%"], json.loads((tmp_path / "config.json").read_text())


def test_a_dict_and_init_to_value_start_the_autoguide_there(tmp_path):
    start, config = _start(tmp_path / "a", init_value={"lam": 0.8})
    assert start == pytest.approx(0.8, rel=1e-4)
    assert config["args"]["init_value"] == ["lam=0.8"]
    start, config = _start(tmp_path / "b", init=init_to_value(values={"lam": torch.tensor(1.7)}))
    assert start == pytest.approx(1.7, rel=1e-4)
    assert config["args"]["init"] == "uniform"  # init_to_value's own fallback, by name
    # recorded by name: the folder reopens without any code of the user's
    assert bayesdl.load(tmp_path / "b").summary()["lam"]["50%"] == pytest.approx(1.7, rel=1e-4)


@pytest.mark.parametrize(
    "strategy, name",
    [(init_to_median, "median"), (init_to_mean, "mean"), (init_to_sample, "sample")],
)
def test_pyro_strategies_are_recorded_by_name(tmp_path, strategy, name):
    start, config = _start(tmp_path, init=strategy)
    assert config["args"]["init"] == name
    if strategy is init_to_mean:  # Gamma(2, 2) has mean 1
        assert start == pytest.approx(1.0, rel=1e-4)


def bimodal(y=None):
    """y ~ N(mu^2, 0.1^2) with y = 25: modes at mu = +5 and -5, no path between them."""
    mu = pyro.sample("mu", dist.Normal(0.0, 10.0))
    pyro.sample("y", dist.Normal(mu**2, 0.1), obs=y)


@pytest.mark.parametrize("sign", [1.0, -1.0])
def test_nuts_starts_at_init_value(sign):
    post = bayesdl.fit(
        bimodal, data={"y": torch.tensor(25.0)}, method="nuts", num_samples=50, warmup=50,
        chains=1, seed=3, init_value={"mu": 5.0 * sign}, progress=False,
    )  # fmt: skip
    mu = post.sample()["mu"]
    assert (torch.sign(mu) == sign).all() and (mu.abs() - 5).abs().max() < 0.1


def test_bad_inits_are_one_line_errors():
    for bad, says in [
        (dict(init=lambda site: None), "unknown initialisation"),
        (dict(init_value="lam"), "takes a dict"),
        (dict(init_value={"lam": object()}), "not a number"),
        (dict(init=init_to_median(num_samples=3)), "cannot be recorded"),
    ]:
        with pytest.raises(bayesdl.UserError, match=says):
            bayesdl.fit(poisson, data={"counts": COUNTS}, steps=1, progress=False, **bad)
