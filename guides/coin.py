"""Guides for the coin: a Beta posterior (full Bayes) and a point mass (MAP / MLE)."""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import torch
from torch.distributions import constraints


def beta(flips: torch.Tensor, prior_a: float = 1.0, prior_b: float = 1.0, mle: bool = False):
    """``q(pi) = Beta(a_q, b_q)``, started at the prior (the family holds the exact posterior)."""
    a_q = pyro.param(
        "a_q",
        lambda: torch.tensor(float(prior_a), device=flips.device),
        constraint=constraints.positive,
    )
    b_q = pyro.param(
        "b_q",
        lambda: torch.tensor(float(prior_b), device=flips.device),
        constraint=constraints.positive,
    )
    return pyro.sample("pi", dist.Beta(a_q, b_q))


def delta(flips: torch.Tensor, prior_a: float = 1.0, prior_b: float = 1.0, mle: bool = False):
    """``q(pi) = delta(pi - pi_hat)``: the ELBO becomes ``log p(D, pi_hat)``, so the optimum is
    the MAP (or the MLE when the model drops the prior)."""
    pi_hat = pyro.param(
        "pi_hat",
        lambda: torch.tensor(0.5, device=flips.device),
        constraint=constraints.unit_interval,
    )
    return pyro.sample("pi", dist.Delta(pi_hat))
