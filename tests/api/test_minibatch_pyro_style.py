"""``batch_size=`` on models written in Pyro's own subsampling styles (the coin of Pyro's "SVI
Part II" tutorial): each minibatched fit matches the full-batch posterior, the closed form."""

from __future__ import annotations

import math

import pyro
import pyro.distributions as dist
import pytest
import torch

import bayesdl

DATA = torch.cat([torch.ones(60), torch.zeros(40)])  # 60 heads, 40 tails
A, B = 10.0 + 60, 10.0 + 40  # the Beta(10, 10) prior's posterior
EXACT_MEAN, EXACT_SD = A / (A + B), math.sqrt(A * B / ((A + B) ** 2 * (A + B + 1)))


def indexed(data):
    f = pyro.sample("latent_fairness", dist.Beta(10.0, 10.0))
    with pyro.plate("data", len(data)) as idx:
        pyro.sample("obs", dist.Bernoulli(f), obs=data[idx])


def subsampled(data):
    f = pyro.sample("latent_fairness", dist.Beta(10.0, 10.0))
    with pyro.plate("data", len(data)):
        pyro.sample("obs", dist.Bernoulli(f), obs=pyro.subsample(data, event_dim=0))


def declared(data):
    """The tutorial's own: the plate declares subsample_size and indexes the data."""
    f = pyro.sample("latent_fairness", dist.Beta(10.0, 10.0))
    with pyro.plate("data", len(data), subsample_size=10) as ind:
        pyro.sample("obs", dist.Bernoulli(f), obs=data.index_select(0, ind))


def _fit(model, **kw):
    post = bayesdl.fit(
        model, data={"data": DATA}, guide="auto-normal", steps=1500, lr=0.02, seed=4,
        progress=False, **kw,
    )  # fmt: skip
    return post.summary(num_samples=4000)["latent_fairness"]


@pytest.mark.parametrize("model", [indexed, subsampled, declared])
def test_minibatched_fit_matches_the_full_batch_posterior(model):
    mini = _fit(model, batch_size=10)
    full = _fit(indexed)
    for row in (mini, full):  # SVI's iterate noise: within 0.3 posterior sd, sd within 15 %
        assert abs(row["mean"] - EXACT_MEAN) < 0.3 * EXACT_SD
        assert abs(row["std"] / EXACT_SD - 1) < 0.15
    assert abs(mini["mean"] - full["mean"]) < 0.4 * EXACT_SD


def test_what_cannot_be_minibatched_says_what_to_write():
    with pytest.raises(bayesdl.UserError, match="must equal it"):
        _fit(declared, batch_size=20)

    def other_name(data):
        f = pyro.sample("latent_fairness", dist.Beta(10.0, 10.0))
        with pyro.plate("observe_data", len(data)) as ind:
            pyro.sample("obs", dist.Bernoulli(f), obs=data[ind])

    with pytest.raises(bayesdl.UserError, match="name it 'data'"):
        _fit(other_name, batch_size=10)
