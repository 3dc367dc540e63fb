"""Bayesian linear regression: ``theta ~ N(mu0, s0^2 I)``, ``y_n ~ N(theta^T x_n, sigma^2)``.

With sigma known the posterior is Gaussian in closed form (lecture, "Bayesian Linear
Regression"): ``Sigma_N = (I / s0^2 + X^T X / sigma^2)^-1``,
``mu_N = Sigma_N (mu0 / s0^2 + X^T y / sigma^2)``, and the predictive at x is
``N(mu_N^T x, sigma^2 + x^T Sigma_N x)``.
"""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import torch


def model(
    x: torch.Tensor,
    y: torch.Tensor | None = None,
    prior_loc: float = 0.0,
    prior_scale: float = 1.0,
    noise_scale: float = 1.0,
):
    """``p(y, theta | x) = N(theta | mu0, s0^2 I) prod_n N(y_n | theta^T x_n, sigma^2)``."""
    d = x.shape[-1]
    loc = torch.full((d,), float(prior_loc), dtype=x.dtype, device=x.device)
    theta = pyro.sample("theta", dist.Normal(loc, prior_scale).to_event(1))
    with pyro.plate("data", x.shape[0]) as idx:
        mean = (x[idx] * theta).sum(-1)  # theta: ([particles, 1,] d)
        pyro.sample("y", dist.Normal(mean, noise_scale), obs=None if y is None else y[idx])
    return theta


def posterior(
    x: torch.Tensor,
    y: torch.Tensor,
    prior_loc: float = 0.0,
    prior_scale: float = 1.0,
    noise_scale: float = 1.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact posterior ``(mu_N, Sigma_N)``, computed in float64."""
    x, y = x.double(), y.double()
    d = x.shape[-1]
    precision = torch.eye(d, dtype=x.dtype) / prior_scale**2 + x.T @ x / noise_scale**2
    cov = torch.linalg.inv(precision)
    cov = 0.5 * (cov + cov.T)
    mu = cov @ (
        torch.full((d,), float(prior_loc), dtype=x.dtype) / prior_scale**2
        + x.T @ y / noise_scale**2
    )
    return mu, cov


def predictive(
    x: torch.Tensor, loc: torch.Tensor, cov: torch.Tensor, noise_scale: float
) -> dist.Normal:
    """``N(m^T x, sigma^2 + x^T S x)`` for a Gaussian ``N(m, S)`` over theta (exact or fitted)."""
    x = x.to(cov.dtype)
    var = noise_scale**2 + ((x @ cov) * x).sum(-1)
    return dist.Normal(x @ loc.to(cov.dtype), var.sqrt())


def mean_field_optimum_variance(cov: torch.Tensor) -> torch.Tensor:
    """Marginal variances of the best factorized Gaussian, ``1 / diag(Sigma_N^-1)`` (they
    under-estimate the exact marginals ``diag(Sigma_N)``)."""
    return 1.0 / torch.diagonal(torch.linalg.inv(cov))
