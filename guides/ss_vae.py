"""Guide of the semi-supervised VAE M2 (Kingma et al. 2014):

    q(y, z | x) = q(y | x) q(z | x, y),    q(y | x) = Cat(pi_phi(x)),
    q(z | x, y) = N(mu_phi(x, y), diag sigma_phi^2(x, y)).

For a labelled pair only ``q(z | x, y)`` is used; for an unlabelled ``x`` the site ``y`` is
enumerated in parallel (all K classes at once), so ``TraceEnum_ELBO`` sums it out exactly.
"""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import torch
from pyro import poutine
from torch import nn

from bayesdl.guides.vae import Encoder
from bayesdl.models.ss_vae import Classifier, join


class LabelEncoder(nn.Module):
    """``(x, y)`` to ``(mu, sigma)`` of ``q(z | x, y)``: the VAE's encoder on
    ``[one_hot(y), x]``."""

    def __init__(
        self,
        data_dim: int,
        num_classes: int,
        hidden: tuple[int, ...],
        latent_dim: int,
        activation: str = "softplus",
    ):
        super().__init__()
        self.num_classes = num_classes
        self.encoder = Encoder(data_dim + num_classes, hidden, latent_dim, activation)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and standard deviation of ``q(z | x, y)``."""
        return self.encoder(join(y, x, self.num_classes))


class SSVAEGuide(nn.Module):
    """``q(y | x) q(z | x, y)`` on the plates of :class:`~bayesdl.models.ss_vae.SSVAEModel`."""

    def __init__(
        self,
        encoder: LabelEncoder,
        classifier: Classifier,
        sup_batch: int | None = None,
        sup_weight: float = 1.0,
    ):
        super().__init__()
        self.encoder, self.classifier, self.sup_batch = encoder, classifier, sup_batch
        self.sup_weight = sup_weight  # the model's: log p(z_sup) - log q(z_sup) scaled alike

    def forward(self, x: torch.Tensor, x_sup: torch.Tensor, y_sup: torch.Tensor) -> None:
        """Sample ``z`` of the labelled points and ``(y, z)`` of the unlabelled ones."""
        pyro.module("encoder", self.encoder)
        pyro.module("classifier", self.classifier)
        with (
            pyro.plate("labelled", len(x_sup), subsample_size=self.sup_batch) as i,
            poutine.scale(scale=self.sup_weight),
        ):
            loc, scale = self.encoder(x_sup.index_select(0, i), y_sup.index_select(0, i))
            pyro.sample("z_sup", dist.Normal(loc, scale, validate_args=False).to_event(1))
        with pyro.plate("data", len(x)) as i:
            xb = x.index_select(0, i)
            q_y = dist.Categorical(logits=self.classifier(xb), validate_args=False)
            y = pyro.sample("y", q_y, infer={"enumerate": "parallel"})
            loc, scale = self.encoder(xb, y)
            pyro.sample("z", dist.Normal(loc, scale, validate_args=False).to_event(1))
