"""Gradient estimators against their known properties: mean (unbiased) and variance.

Toy problem (Mohamed et al. 2020, figs. 2-3): q(x) = N(mu, 1) at mu = 1, model density
exp(-(x - k)^2) on an improper flat prior, so the ELBO integrand is
f(x) = -(x - k)^2 - log q(x). With eps = x - mu and c = mu - k:
  pathwise:       g = -2 (x - k)              mean -2c, variance 4 (for every k, as in the paper)
  score function: g = eps f(x)                mean -2c,
                  variance 15/4 + 8 c^2 + d^2 - 3 d  with d = log(2 pi) / 2 - c^2
                  (d = 1/2 with the mean as baseline)
(the paper's 30 / 15 / 87 / 495 are for the bare cost without the -log q term: 15 + 14c^2 + c^4,
checked below too).
"""

from __future__ import annotations

import math

import pyro
import pyro.distributions as dist
import pytest
import torch
from torch.distributions import constraints

from bayesdl.inference.diagnostics import gradient_draws
from bayesdl.inference.estimators import Estimator, ScoreFunction, make_estimator

DRAWS = 4000


def toy(k: float):
    def model():
        x = pyro.sample("x", dist.ImproperUniform(constraints.real, (), ()))
        pyro.factor("cost", -((x - k) ** 2))

    def guide():
        mu = pyro.param("mu", torch.tensor(1.0))
        pyro.sample("x", dist.Normal(mu, 1.0))

    return model, guide


def score_without_baseline() -> Estimator:
    est = make_estimator("score")
    est.wrap_guide = lambda g: ScoreFunction(baseline={})(g)
    return est


def score_draws(k: float, baseline: bool) -> torch.Tensor:
    """DRAWS score-function gradients of the toy at ``k`` (with Pyro's decaying-average
    baseline or none), from seed 0 and a fresh baseline (4,000 TraceGraph ELBOs: about 25 s
    of CPU)."""
    model, guide = toy(k)
    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    est = "score" if baseline else score_without_baseline()
    return gradient_draws(model, guide, {}, est, DRAWS)["mu"]


def _closed_form_score_variance(k: float, baseline: float | None = None) -> float:
    """Variance of eps * (f - b); the optimal constant b = E f leaves d = 1/2."""
    c = 1.0 - k
    d = 0.5 if baseline == "mean" else 0.5 * math.log(2 * math.pi) - c**2
    return 15 / 4 + 8 * c**2 + d**2 - 3 * d


@pytest.mark.parametrize("k", [0.0, 3.0])
def test_pathwise_gradient_variance_is_four(k):
    model, guide = toy(k)
    g = gradient_draws(model, guide, {}, "reparam", DRAWS)["mu"]
    # d/dmu of -ELBO: mean 2(1 - k); sample variance of 4 has relative s.e. sqrt(2 / S) ~ 2.2 %
    assert g.mean().item() == pytest.approx(2 * (1 - k), abs=4 * 2 / math.sqrt(DRAWS))
    assert g.var().item() == pytest.approx(4.0, rel=4 * math.sqrt(2 / DRAWS))


@pytest.mark.parametrize("k", [0.0, 3.0])
def test_score_function_is_unbiased_with_its_known_variance(k):
    g = score_draws(k, baseline=False)
    var = _closed_form_score_variance(k)
    se = math.sqrt(var / DRAWS)
    assert g.mean().item() == pytest.approx(2 * (1 - k), abs=4 * se)
    # heavy-tailed (eps^3 terms): allow 20 % on the variance
    assert g.var().item() == pytest.approx(var, rel=0.2)
    assert g.var().item() > 2 * 4.0  # larger than the pathwise variance


def test_anchor_numbers_of_bare_cost():
    # the formula used above reproduces the paper's numbers when the -log q term is dropped
    for k, expected in [(0, 30), (1, 15), (3, 87), (-3, 495)]:
        c = 1.0 - k
        assert 15 + 14 * c**2 + c**4 == expected


def test_baseline_reduces_score_variance():
    based = score_draws(3.0, baseline=True)
    # a decaying average of f converges to E f: the variance of the optimal constant baseline
    # (34.5 at k = 3), against 54.5 without one (measured in the test above)
    assert based.var().item() == pytest.approx(_closed_form_score_variance(3.0, "mean"), rel=0.2)
    assert based.var().item() < 0.8 * _closed_form_score_variance(3.0)
    assert based.mean().item() == pytest.approx(-4.0, abs=4 * math.sqrt(based.var().item() / DRAWS))


def test_score_and_reparam_agree_on_linear_regression():
    """Both estimate the same gradient (unbiased); REINFORCE pays in variance."""
    from bayesdl.datasets.bundled import diabetes
    from bayesdl.guides.linear_regression import mean_field
    from bayesdl.models.linear_regression import model

    s = diabetes()
    data = {"x": s.x_train[:60], "y": s.y_train[:60]}
    guide = mean_field(model)
    draws = 1500
    rep = gradient_draws(model, guide, data, "reparam", draws)
    sco = gradient_draws(model, guide, data, "score", draws)
    for name in rep:
        r, q = rep[name].reshape(draws, -1), sco[name].reshape(draws, -1)
        se = ((r.var(0) + q.var(0)) / draws).sqrt()
        z = ((r.mean(0) - q.mean(0)) / se).abs()
        assert (z < 4.5).all(), (name, z)
        assert (q.var(0) > r.var(0)).all(), name


def _eight_schools(y, sigma):
    mu = pyro.sample("mu", dist.Normal(0.0, 5.0))
    tau = pyro.sample("tau", dist.HalfCauchy(5.0))  # no KL(LogNormal || HalfCauchy): a draw
    with pyro.plate("schools", len(y)):
        theta = pyro.sample("theta", dist.Normal(mu, tau))
        pyro.sample("obs", dist.Normal(theta, sigma), obs=y)


@pytest.mark.parametrize(
    "ours, pyros",
    [
        ("SyncFreeTrace_ELBO", "Trace_ELBO"),
        ("SyncFreeTraceMeanField_ELBO", "TraceMeanField_ELBO"),
        ("SyncFreeTraceGraph_ELBO", "TraceGraph_ELBO"),
    ],
)
def test_sync_free_elbos_are_pyros_own_on_the_same_noise(ours, pyros):
    """Our subclasses only drop the host reads: from the same RNG state, the loss value and
    every parameter's gradient equal Pyro's (``loss_and_grads``) to float32 rounding, on eight
    schools with an AutoNormal guide (analytic KL for mu and theta, a draw for tau), 3
    particles."""
    import pyro.infer as pi
    from pyro.infer.autoguide import AutoNormal

    import bayesdl.inference.elbo as ours_mod

    y = torch.tensor([28.0, 8.0, -3.0, 7.0, -1.0, 1.0, 18.0, 12.0])
    sigma = torch.tensor([15.0, 10.0, 16.0, 11.0, 9.0, 11.0, 10.0, 18.0])
    out = []
    for elbo in (getattr(ours_mod, ours)(num_particles=3), getattr(pi, pyros)(num_particles=3)):
        with pyro.get_param_store().scope():
            pyro.set_rng_seed(0)
            guide = AutoNormal(_eight_schools)
            guide(y, sigma)
            params = [p.unconstrained() for p in pyro.get_param_store().values()]
            pyro.set_rng_seed(1)
            if type(elbo).__name__.startswith("SyncFree"):
                loss = elbo.differentiable_loss(_eight_schools, guide, y, sigma)
                loss.backward()
                loss = float(loss.detach())
            else:
                loss = elbo.loss_and_grads(_eight_schools, guide, y, sigma)
            out.append((loss, [p.grad.clone() for p in params]))
    (l1, g1), (l2, g2) = out
    assert l1 == pytest.approx(l2, rel=1e-6)
    for a, b in zip(g1, g2, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
