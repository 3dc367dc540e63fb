"""Closed forms behind the tour's lecture-claim sections (:mod:`bayesdl.reports.tour_lecture`).

Coin, ``pi ~ Beta(a, b)``, ``x_n ~ Bern(pi)``, ``h`` heads and ``t`` tails:

* posterior ``Beta(a + h, b + t)``; batch after batch, each posterior the next prior, the
  parameters add up to the same ``Beta(a + sum h_k, b + sum t_k)``;
* for ``q = Beta(a_q, b_q)``: ``E_q log pi = psi(a_q) - psi(a_q + b_q)``, so
  ``ELBO(q) = h E_q log pi + t E_q log(1 - pi) - KL(q || prior)`` in closed form;
* the next flip's log loss, averaged over ``h ~ Binomial(n, pi*)`` exactly.

Linear regression with known noise, ``theta ~ N(mu0, s0^2 I)``, ``y ~ N(X theta, sigma^2 I)``:

* ``log p(D) = log N(y | X mu0, sigma^2 I + s0^2 X X^T)``;
* for ``q = N(m, S)``: ``E_q log p(y | theta) = -n/2 log(2 pi sigma^2)
  - (|y - X m|^2 + tr(X S X^T)) / (2 sigma^2)``, minus ``KL(q || prior)``.

For both, ``KL(q || p(theta | D)) = log p(D) - ELBO(q)`` (lecture, "Variational Inference").
The Monte Carlo ELBO is Pyro's own ``Trace_ELBO``, its standard error from independent repeats.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
import pyro
import pyro.distributions as dist
import torch
from pyro.infer import Trace_ELBO
from torch.distributions import kl_divergence

import bayesdl.models.coin as coin

# -- coin --------------------------------------------------------------------------------------


def beta_sequential(
    prior_a: float, prior_b: float, batches: Sequence[tuple[int, int]]
) -> list[tuple[float, float]]:
    """The posterior ``(a, b)`` after each batch ``(heads, tails)``, each the next batch's prior."""
    out, a, b = [], prior_a, prior_b
    for h, t in batches:
        a, b = coin.posterior(a, b, h, t)
        out.append((a, b))
    return out


def beta_mean_sd(a: float, b: float) -> tuple[float, float]:
    """Mean ``a / (a + b)`` and sd ``sqrt(a b / ((a + b)^2 (a + b + 1)))`` of ``Beta(a, b)``."""
    s = a + b
    return a / s, math.sqrt(a * b / (s * s * (s + 1)))


def _t(v: float) -> torch.Tensor:
    return torch.tensor(float(v), dtype=torch.float64)


def coin_elbo(prior_a: float, prior_b: float, h: int, t: int, a_q: float, b_q: float) -> float:
    """``ELBO(Beta(a_q, b_q)) = h E_q log pi + t E_q log(1 - pi) - KL(q || Beta(a, b))``."""
    psi = torch.special.digamma
    e_log_pi = psi(_t(a_q)) - psi(_t(a_q + b_q))
    e_log_1m = psi(_t(b_q)) - psi(_t(a_q + b_q))
    kl = kl_divergence(dist.Beta(_t(a_q), _t(b_q)), dist.Beta(_t(prior_a), _t(prior_b)))
    return float(h * e_log_pi + t * e_log_1m - kl)


def coin_kl_to_posterior(
    prior_a: float, prior_b: float, h: int, t: int, a_q: float, b_q: float
) -> float:
    """``KL(Beta(a_q, b_q) || Beta(a + h, b + t))``, exact."""
    pa, pb = coin.posterior(prior_a, prior_b, h, t)
    return float(kl_divergence(dist.Beta(_t(a_q), _t(b_q)), dist.Beta(_t(pa), _t(pb))))


def coin_predictors(prior_a: float, prior_b: float) -> dict[str, Callable[[int, int], float]]:
    """``P(next = 1 | h, t)`` of full Bayes, MAP and MLE (:mod:`bayesdl.models.coin`)."""
    return {
        "Bayes": lambda h, t: coin.predictive_bayes(prior_a, prior_b, h, t),
        "MAP": lambda h, t: coin.map_estimate(prior_a, prior_b, h, t),
        "MLE": coin.mle_estimate,
    }


def coin_expected_log_loss(
    pi: float, n: int, predict: Callable[[int, int], float]
) -> tuple[float, float]:
    """The next flip's log loss ``-pi log p - (1 - pi) log(1 - p)`` of ``p = predict(h, n - h)``,
    averaged exactly over ``h ~ Binomial(n, pi)``: ``(mean over the datasets where it is
    finite, probability of an infinite loss)`` (a point estimate of 0 or 1)."""
    h = np.arange(n + 1)
    log_pmf = np.array(
        [
            math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1)
            + (k * math.log(pi) if k else 0.0) + ((n - k) * math.log1p(-pi) if n - k else 0.0)
            for k in h
        ]
    )  # fmt: skip
    pmf = np.exp(log_pmf)
    p = np.array([predict(int(k), int(n - k)) for k in h])
    finite = (p > 0) & (p < 1)
    loss = np.full(n + 1, np.inf)
    loss[finite] = -(pi * np.log(p[finite]) + (1 - pi) * np.log1p(-p[finite]))
    p_inf = float(pmf[~finite].sum())
    mean = float((pmf[finite] * loss[finite]).sum() / max(pmf[finite].sum(), 1e-300))
    return mean, p_inf


def bernoulli_entropy(pi: float) -> float:
    """``H(pi) = -pi log pi - (1 - pi) log(1 - pi)``: the least expected log loss."""
    return -(pi * math.log(pi) + (1 - pi) * math.log1p(-pi))


# -- linear regression -------------------------------------------------------------------------


def _f64(*xs: torch.Tensor) -> list[torch.Tensor]:
    return [torch.as_tensor(x).double() for x in xs]


def linreg_log_evidence(
    x: torch.Tensor, y: torch.Tensor, prior_loc: float, prior_scale: float, noise_scale: float
) -> float:
    """``log p(y | X) = log N(y | X mu0, sigma^2 I + s0^2 X X^T)``."""
    x, y = _f64(x, y)
    n, d = x.shape
    mean = x @ torch.full((d,), float(prior_loc), dtype=x.dtype)
    cov = noise_scale**2 * torch.eye(n, dtype=x.dtype) + prior_scale**2 * x @ x.T
    return float(dist.MultivariateNormal(mean, cov).log_prob(y))


def linreg_elbo(
    x: torch.Tensor,
    y: torch.Tensor,
    m: torch.Tensor,
    s: torch.Tensor,
    prior_loc: float,
    prior_scale: float,
    noise_scale: float,
) -> float:
    """``ELBO(N(m, S)) = -n/2 log(2 pi sigma^2) - (|y - X m|^2 + tr(X S X^T)) / (2 sigma^2)
    - KL(N(m, S) || N(mu0, s0^2 I))``."""
    x, y, m, s = _f64(x, y, m, s)
    n, d = x.shape
    resid = y - x @ m
    e_loglik = -0.5 * n * math.log(2 * math.pi * noise_scale**2) - (
        resid @ resid + ((x @ s) * x).sum()
    ) / (2 * noise_scale**2)
    prior = dist.MultivariateNormal(
        torch.full((d,), float(prior_loc), dtype=x.dtype),
        prior_scale**2 * torch.eye(d, dtype=x.dtype),
    )
    return float(e_loglik - kl_divergence(dist.MultivariateNormal(m, s), prior))


def linreg_kl_to_posterior(
    m: torch.Tensor, s: torch.Tensor, mu_n: torch.Tensor, sigma_n: torch.Tensor
) -> float:
    """``KL(N(m, S) || N(mu_N, Sigma_N))``, exact."""
    m, s, mu_n, sigma_n = _f64(m, s, mu_n, sigma_n)
    return float(
        kl_divergence(dist.MultivariateNormal(m, s), dist.MultivariateNormal(mu_n, sigma_n))
    )


# -- Monte Carlo and rates ---------------------------------------------------------------------


def fixed_guide(site: str, q: dist.Distribution) -> Callable:
    """A guide with no parameters: ``site ~ q``."""

    def guide(*args, **kwargs):
        return pyro.sample(site, q)

    return guide


def mc_elbo(
    model: Callable,
    guide: Callable,
    data: dict,
    particles: int = 500,
    repeats: int = 20,
) -> tuple[float, float]:
    """The ELBO by Pyro's ``Trace_ELBO`` (``particles`` vectorized draws of ``q``), repeated
    ``repeats`` times: ``(mean, standard error of the mean)``."""
    elbo = Trace_ELBO(num_particles=particles, vectorize_particles=True, max_plate_nesting=1)
    with torch.no_grad():
        est = np.array([-elbo.loss(model, guide, **data) for _ in range(repeats)])
    return float(est.mean()), float(est.std(ddof=1) / math.sqrt(repeats))


def loglog_slope(n: Sequence[float], sd: Sequence[float]) -> float:
    """The least-squares slope of ``log sd`` against ``log n`` (-1/2 for a ``1 / sqrt(n)`` rate)."""
    return float(np.polyfit(np.log(np.asarray(n, float)), np.log(np.asarray(sd, float)), 1)[0])
