"""Amortized posterior over depth: ``q(z | x) = Categorical(z | softmax(g_phi(x)))``.

A small MLP on the input gives a categorical over the L depths; it is what decides, at test time,
how many blocks an input gets (early exit). For the score-function estimator the guide also
carries an input-dependent baseline ``b_psi(x)`` (Pyro's ``nn_baseline``), fitted by Pyro to the
per-datum downstream cost.
"""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import torch
from torch import nn


class AmortizedDepthGuide(nn.Module):
    """``q(z | x)`` by an MLP ``in_dim -> hidden -> L``; starts uniform (last layer zero)."""

    def __init__(self, in_dim: int, blocks: int, hidden: int = 32):
        super().__init__()
        self.encoder = nn.Sequential(
            nn.Linear(in_dim, hidden), nn.ReLU(), nn.Linear(hidden, blocks)
        )
        nn.init.zeros_(self.encoder[-1].weight)
        nn.init.zeros_(self.encoder[-1].bias)
        self.baseline_net = nn.Sequential(
            nn.Linear(in_dim, hidden), nn.ReLU(), nn.Linear(hidden, 1)
        )

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """Unnormalized ``log q(z | x)``, shape ``(B, L)``."""
        return self.encoder(x.reshape(x.shape[0], -1))

    def baseline(self, x: torch.Tensor) -> torch.Tensor:
        """``b_psi(x)``, shape ``(B,)``: a control variate for the score-function estimator."""
        return self.baseline_net(x.reshape(x.shape[0], -1)).squeeze(-1)

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> None:  # noqa: ARG002
        """Sample ``z_n ~ q(z | x_n)`` for the data plate (``y`` is not looked at)."""
        pyro.module("depth_guide", self)
        with pyro.plate("data", x.shape[0]) as idx:
            xb = x[idx]
            pyro.sample(
                "z",
                dist.Categorical(logits=self.logits(xb)),
                infer={"baseline": {"nn_baseline": self.baseline, "nn_baseline_input": xb}},
            )


def no_latent(x: torch.Tensor, y: torch.Tensor | None = None) -> None:  # noqa: ARG001
    """The empty guide of the fixed-depth networks (no latent variable to infer)."""
