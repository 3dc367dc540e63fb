"""``post.to_arviz()`` as an ArviZ user meets it: the groups ``az.loo``, ``az.waic`` and
``az.plot_ppc`` read, checked against the closed form of a conjugate model."""

from __future__ import annotations

import math

import pyro
import pyro.distributions as dist
import pytest
import torch

import bayesdl

az = pytest.importorskip("arviz")

N, PRIOR_SD = 20, 3.0
Y = torch.tensor(
    [
        2.1,
        1.4,
        3.0,
        1.9,
        2.5,
        0.8,
        2.2,
        1.7,
        2.9,
        2.0,
        1.1,
        2.6,
        1.8,
        2.3,
        1.5,
        2.4,
        2.8,
        1.6,
        4.0,
        1.2,
    ]
)


def model(y=None):
    """mu ~ N(0, 3^2), y_i ~ N(mu, 1)."""
    mu = pyro.sample("mu", dist.Normal(0.0, PRIOR_SD))
    with pyro.plate("data", N):
        pyro.sample("y", dist.Normal(mu, 1.0), obs=y)


def exact_loo() -> float:
    """sum_i log p(y_i | y_-i) = sum_i log N(y_i; m_-i, 1 + v_-i), the closed form."""
    total = 0.0
    for i in range(N):
        rest = torch.cat([Y[:i], Y[i + 1 :]])
        v = 1 / (1 / PRIOR_SD**2 + len(rest))
        m = v * float(rest.sum())
        total += float(dist.Normal(m, math.sqrt(1 + v)).log_prob(Y[i]))
    return total


@pytest.fixture(scope="module")
def vi():
    return bayesdl.fit(
        model, data={"y": Y}, guide="auto-normal", steps=1500, lr=0.05, particles=8,
        lr_schedule="constant", seed=2, progress=False,
    )  # fmt: skip


def test_groups_and_log_likelihood_per_observation_and_draw(vi):
    idata = vi.to_arviz(num_samples=400)
    for group in ("posterior", "log_likelihood", "posterior_predictive", "observed_data"):
        assert group in idata.groups(), group
    ll = idata.log_likelihood["y"].values
    assert ll.shape == (1, 400, N)
    mu = torch.as_tensor(idata.posterior["mu"].values[0])
    direct = dist.Normal(mu[:, None], 1.0).log_prob(Y)  # log p(y_i | mu_m), by hand
    assert torch.allclose(torch.as_tensor(ll[0]).double(), direct.double(), atol=1e-5)
    assert (idata.observed_data["y"].values == Y.numpy()).all()
    ppc = idata.posterior_predictive["y"].values
    assert ppc.shape == (1, 400, N)
    # y* ~ N(mu_m, 1): its spread around mu_m is the noise sd 1 (400 x 20 draws: se ~ 0.01)
    resid = ppc[0] - mu.numpy()[:, None]
    assert abs(resid.std() - 1.0) < 0.05


def test_waic_and_loo_agree_with_direct_computations(vi):
    idata = vi.to_arviz(num_samples=1000)
    ll = torch.as_tensor(idata.log_likelihood["y"].values[0]).double()  # [draws, N]
    lppd = torch.logsumexp(ll, 0) - math.log(ll.shape[0])  # log mean_m p(y_i | z_m)
    waic_direct = float((lppd - ll.var(0, correction=0)).sum())  # minus p_waic (Gelman 2014)
    assert az.waic(idata).elpd_waic == pytest.approx(waic_direct, rel=1e-6)
    loo = az.loo(idata, pointwise=True)
    assert (loo.pareto_k.values < 0.5).all()
    # PSIS-LOO over the fitted posterior vs the exact leave-one-out predictive density
    assert loo.elpd_loo == pytest.approx(exact_loo(), abs=0.3)


def test_nuts_adds_sample_stats_and_its_loo_agrees():
    post = bayesdl.fit(
        model, data={"y": Y}, method="nuts", num_samples=300, warmup=200, chains=2, seed=0,
        progress=False,
    )  # fmt: skip
    idata = post.to_arviz()
    stats = idata.sample_stats
    for name in ("diverging", "acceptance_rate", "lp", "step_size"):
        assert stats[name].shape == (2, 300), name
    assert stats["diverging"].dtype == bool and int(stats["diverging"].sum()) == 0
    acc = stats["acceptance_rate"].values
    assert ((acc >= 0) & (acc <= 1 + 1e-9)).all()
    # dual averaging aims at target_accept 0.8 during warm-up; after it the mean is near
    assert 0.6 < acc.mean() < 1.0
    # lp = -potential energy = log p(y, mu) (mu is unconstrained: no Jacobian), by hand
    mu = torch.as_tensor(idata.posterior["mu"].values).double()
    joint = dist.Normal(0.0, PRIOR_SD).log_prob(mu) + dist.Normal(mu[..., None], 1.0).log_prob(
        Y.double()
    ).sum(-1)
    assert torch.allclose(torch.as_tensor(stats["lp"].values), joint, atol=1e-3)
    assert idata.log_likelihood["y"].shape == (2, 300, N)
    assert az.loo(idata).elpd_loo == pytest.approx(exact_loo(), abs=0.3)


def test_plot_ppc_runs(vi):
    import matplotlib

    matplotlib.use("Agg")
    axes = az.plot_ppc(vi.to_arviz(num_samples=50), num_pp_samples=20)
    assert axes is not None
