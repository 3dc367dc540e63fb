"""Amortized guide of the VAE: one inference network for every datum,

    q(z_n | x_n) = N(z_n | mu_lambda(x_n), diag sigma_lambda^2(x_n)),

an MLP with a mean head and a log-standard-deviation head (Kingma & Welling 2013).
"""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import torch
from torch import nn

from bayesdl.models.vae import mlp


class Encoder(nn.Module):
    """``x`` (..., D) to ``(mu, sigma)`` of ``q(z | x)``, each (..., L)."""

    def __init__(
        self, data_dim: int, hidden: tuple[int, ...], latent_dim: int, activation: str = "tanh"
    ):
        super().__init__()
        self.trunk = mlp([data_dim, *hidden], activation, final_activation=True)
        self.head = nn.Linear(hidden[-1] if hidden else data_dim, 2 * latent_dim)
        with torch.no_grad():  # start at sigma = 1 whatever the scale of x
            self.head.weight[latent_dim:].zero_()
            self.head.bias[latent_dim:].zero_()

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and standard deviation of ``q(z | x)``."""
        loc, log_scale = self.head(self.trunk(x)).chunk(2, dim=-1)
        return loc, log_scale.exp()


class AmortizedGuide(nn.Module):
    """``q(z | x) = prod_n N(z_n | mu(x_n), diag sigma^2(x_n))`` as a Pyro guide."""

    def __init__(self, encoder: Encoder):
        super().__init__()
        self.encoder = encoder

    def forward(self, x: torch.Tensor) -> None:
        """Sample every ``z_n`` of the (sub)sampled plate ``data``."""
        with pyro.plate("data", x.shape[0]) as idx:
            loc, scale = self.encoder(x.index_select(0, idx))
            pyro.sample("z", dist.Normal(loc, scale, validate_args=False).to_event(1))
