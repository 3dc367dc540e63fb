"""The predictive uncertainty of a Bayesian network, split into its sources.

From network outputs ``f [M, n, *out]`` of ``M`` posterior draws: for classification the
entropy of the predictive ``H[E_q p(y | x, theta)]`` = ``E_q H[p(y | x, theta)]`` (aleatoric)
+ the mutual information (epistemic); for regression ``sd^2 = E_q sigma^2 + Var_q mu``.
"""

from __future__ import annotations

import torch

from bayesdl.models.bayesian_net import Gaussian, Likelihood, Poisson

EPS = 1e-12


def _entropy(p: torch.Tensor) -> torch.Tensor:
    return -(p * p.clamp_min(EPS).log()).sum(-1)


def split_uncertainty(
    likelihood: Likelihood, f: torch.Tensor, sigma: torch.Tensor | None = None
) -> dict[str, torch.Tensor]:
    """The predictive distribution's uncertainty from network outputs ``f [M, n, *out]`` of
    ``M`` posterior draws, split into its sources (see :func:`bayesdl.bnn.uncertainty`)."""
    if likelihood.classification:
        p = likelihood.probs(f)
        mean = p.mean(0)
        total, expected = _entropy(mean), _entropy(p).mean(0)
        return {
            "probs": mean,
            "entropy": total,
            "expected_entropy": expected,
            "mutual_information": (total - expected).clamp_min(0),
        }
    if isinstance(likelihood, Gaussian):
        mu, sd = likelihood.mean_sd(f, 2, sigma=sigma)
        noise, model = (sd**2).mean(0), mu.var(0, unbiased=False)
    elif isinstance(likelihood, Poisson):
        event = likelihood.event(tuple(f.shape[2:]))
        mu = likelihood._reshape(f, 2, event).clamp(max=30).exp()
        noise, model = mu.mean(0), mu.var(0, unbiased=False)
    else:
        raise ValueError(f"no uncertainty split for {type(likelihood).__name__}")
    return {
        "mean": mu.mean(0),
        "sd": (noise + model).sqrt(),
        "sd_noise": noise.sqrt(),
        "sd_model": model.sqrt(),
    }
