"""Coin tossing: ``pi ~ Beta(a, b)``, ``x_n ~ Bernoulli(pi)``.

The prior is conjugate, so everything is known in closed form (lecture, "Coin Tossing"):
posterior ``Beta(a + h, b + t)``, predictive ``P(x = 1 | D) = (a + h) / (a + b + n)``,
MAP ``(a + h - 1) / (a + b + n - 2)``, MLE ``h / n``.
"""

from __future__ import annotations

import math

import pyro
import pyro.distributions as dist
import torch


def model(flips: torch.Tensor, prior_a: float = 1.0, prior_b: float = 1.0, mle: bool = False):
    """``p(x, pi) = Beta(pi | a, b) prod_n Bern(x_n | pi)``; ``mle=True`` drops the prior."""
    a = torch.as_tensor(prior_a, dtype=flips.dtype, device=flips.device)
    b = torch.as_tensor(prior_b, dtype=flips.dtype, device=flips.device)
    pi = pyro.sample("pi", dist.Beta(a, b).mask(not mle))
    if flips.shape[0]:  # with no flips the posterior is the prior
        with pyro.plate("data", flips.shape[0]) as idx:
            pyro.sample("x", dist.Bernoulli(pi), obs=flips[idx])
    return pi


def posterior(prior_a: float, prior_b: float, heads: int, tails: int) -> tuple[float, float]:
    """Exact posterior ``Beta(a + h, b + t)`` as its two parameters."""
    return prior_a + heads, prior_b + tails


def predictive_bayes(prior_a: float, prior_b: float, heads: int, tails: int) -> float:
    """Full-Bayes ``P(next = 1 | D) = (a + h) / (a + b + n)`` (Laplace's rule for a = b = 1)."""
    return (prior_a + heads) / (prior_a + prior_b + heads + tails)


def map_estimate(prior_a: float, prior_b: float, heads: int, tails: int) -> float:
    """The posterior mode ``(a + h - 1) / (a + b + n - 2)`` (clipped to [0, 1])."""
    n = heads + tails
    denom = prior_a + prior_b + n - 2
    if denom <= 0:
        return float("nan")
    return min(1.0, max(0.0, (prior_a + heads - 1) / denom))


def mle_estimate(heads: int, tails: int) -> float:
    """Maximum likelihood ``h / n`` (undefined with no flips)."""
    n = heads + tails
    return heads / n if n else float("nan")


def log_evidence(prior_a: float, prior_b: float, heads: int, tails: int) -> float:
    """``log p(D) = log B(a + h, b + t) - log B(a, b)`` for the observed sequence."""

    def log_beta(x: float, y: float) -> float:
        return math.lgamma(x) + math.lgamma(y) - math.lgamma(x + y)

    return log_beta(prior_a + heads, prior_b + tails) - log_beta(prior_a, prior_b)
