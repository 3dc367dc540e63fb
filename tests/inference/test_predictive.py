"""Posterior-predictive draws pair each model draw with its own posterior draw.

Pyro's ``Predictive(..., parallel=True)`` reshapes a posterior sample ``[n, d]`` of a site
outside every plate (a coefficient vector) as if ``d`` were a plate dim; where ``n`` equals the
number of data rows the model then broadcasts draw ``i``'s coefficients against datum ``i``
alone and returns a wrong answer without an error. These tests hit that through the public
API, with the number of draws equal to the number of rows.
"""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import pytest
import torch

import bayesdl
from bayesdl.inference.predictive import chunks

N, D, NOISE = 40, 3, 0.05


def linreg(x, y=None):
    """``theta ~ N(0, I)``, ``y_n ~ N(theta^T x_n, NOISE^2)``."""
    theta = pyro.sample("theta", dist.Normal(torch.zeros(D), 1.0).to_event(1))
    with pyro.plate("data", x.shape[0]):
        pyro.sample("y", dist.Normal((x * theta).sum(-1), NOISE), obs=y)


def unbroadcast(x, y=None):
    """A model that does not broadcast over draws (``theta @ x.T``)."""
    theta = pyro.sample("theta", dist.Normal(torch.zeros(D), 1.0).to_event(1))
    with pyro.plate("data", x.shape[0]):
        pyro.sample("y", dist.Normal(x @ theta, NOISE), obs=y)


@pytest.fixture(scope="module")
def data():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(N, D, generator=g)
    y = x @ torch.tensor([1.0, -2.0, 0.5]) + NOISE * torch.randn(N, generator=g)
    return {"x": x, "y": y}


def _residual_sd(draws, x):
    theta = draws["theta"].reshape(-1, D)
    return (draws["y"] - theta @ x.T).std().item()


@pytest.mark.parametrize("model", [linreg, unbroadcast], ids=["broadcasts", "does-not"])
@pytest.mark.parametrize("guide", ["auto-mvn", "auto-normal"])
def test_draws_as_many_as_rows_are_paired(data, model, guide):
    pyro.set_rng_seed(0)
    post = bayesdl.fit(model, data, guide=guide, steps=300, lr=0.05, log_every=50)
    for n in (N, N + 1, 7):
        draws = post.predict(num_samples=n)
        assert draws["y"].shape == (n, N) and draws["theta"].shape == (n, D)
        # y_m - theta_m^T x is pure noise when draw m's y comes from draw m's theta
        assert _residual_sd(draws, data["x"]) == pytest.approx(NOISE, rel=0.25), n


def test_nuts_draws_as_many_as_rows_are_paired(data):
    pyro.set_rng_seed(0)
    post = bayesdl.fit(linreg, data, method="nuts", num_samples=N, warmup=100, chains=1)
    draws = post.predict(num_samples=N)
    assert _residual_sd(draws, data["x"]) == pytest.approx(NOISE, rel=0.25)


def test_chunks_avoid_the_sizes_of_the_data():
    assert chunks(40, 100, {40, 3}) == [39, 1]
    assert chunks(100, 40, {40, 3}) == [39, 39, 22]
    assert sum(chunks(1000, 7, {7, 6, 2})) == 1000
    assert all(c == 1 or c not in {7, 6, 2} for c in chunks(1000, 7, {7, 6, 2}))
