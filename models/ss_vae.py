"""Semi-supervised VAE, M2 (Kingma, Rezende, Mohamed, Welling 2014): a class label ``y`` and a
style ``z`` generate the image,

    y_n ~ Cat(1/K),   z_n ~ N(0, I_L),   x_n | y_n, z_n ~ prod_d Bern(sigmoid(f(y_n, z_n))_d).

``y_n`` is observed for the labelled points (plate ``labelled``) and a discrete latent for the
rest (plate ``data``, the engine's minibatch plate), where the ``enum`` estimator
(:class:`~pyro.infer.TraceEnum_ELBO`) sums it out against the guide's ``q(y | x)``:

    -U(x) = sum_y q(y | x) (-L(x, y)) + H(q(y | x)),

``-L(x, y)`` the ELBO of a labelled pair. The paper's objective ``J^alpha`` adds
``alpha E_labelled[log q(y | x)]`` so that the classifier also learns from the labels; it enters
here as the observed site ``y_aux ~ Cat(q(y | x))`` of the labelled plate, scaled by
``alpha / N_labelled`` (``alpha = 0.1 N`` in the paper). The model and guide share the
classifier network ``q(y | x)``.

The whole labelled term (``L`` and ``alpha log q``) can be weighted by ``w``, the same scale on
the labelled sites of model and guide: ``w = 1`` is the paper's ``J^alpha``, where on MNIST
with 100 labels the labelled points are 0.17 % of the objective and, while the decoder does
not yet use ``y``, the unlabelled term only pushes ``q(y | x)`` toward uniform (its entropy)
and the decoder learns to ignore ``y``. ``w = N_unlabelled / N_labelled`` (the workflow's
default) lets the labelled set weigh as much as the unlabelled one. Pixels in [0, 1] are scored
by the Bernoulli cross-entropy (as Pyro's ``examples/vae/ss_vae_M2.py``).
"""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import torch
from pyro import poutine
from torch import nn

from bayesdl.models.vae import mlp


def join(y: torch.Tensor, other: torch.Tensor, num_classes: int) -> torch.Tensor:
    """``[one_hot(y), other]`` along the last dim, the batch dims broadcast (an enumerated
    ``y`` of shape (K, 1) against ``other`` (B, D) or (K, B, D))."""
    # == arange, not F.one_hot, which reads y's values on the host to check their range
    # (a per-step sync, and no compiled step); the labels are checked where they are read
    onehot = (y.unsqueeze(-1) == torch.arange(num_classes, device=y.device)).to(other.dtype)
    shape = torch.broadcast_shapes(onehot.shape[:-1], other.shape[:-1])
    return torch.cat([onehot.expand(*shape, -1), other.expand(*shape, -1)], -1)


class Classifier(nn.Module):
    """``q(y | x)``: an MLP from ``x`` (..., D) to the logits (..., K)."""

    def __init__(
        self, data_dim: int, hidden: tuple[int, ...], num_classes: int, activation: str = "softplus"
    ):
        super().__init__()
        self.net = mlp([data_dim, *hidden, num_classes], activation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of ``q(y | x)``."""
        return self.net(x)


class ConditionalDecoder(nn.Module):
    """``f(y, z)``: one-hot label and style to the pixel logits."""

    def __init__(
        self,
        num_classes: int,
        latent_dim: int,
        hidden: tuple[int, ...],
        data_dim: int,
        activation: str = "softplus",
    ):
        super().__init__()
        self.num_classes = num_classes
        self.net = mlp([num_classes + latent_dim, *hidden, data_dim], activation)

    def forward(self, y: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """Pixel logits (..., D)."""
        return self.net(join(y, z, self.num_classes))

    def likelihood(self, y: torch.Tensor, z: torch.Tensor) -> dist.TorchDistribution:
        """``p(x | y, z)``, pixels one event; no argument checks (grayscale targets)."""
        return dist.Bernoulli(logits=self(y, z), validate_args=False).to_event(1)

    def mean(self, y: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """``E[x | y, z]`` (for pictures)."""
        return torch.sigmoid(self(y, z))


class SSVAEModel(nn.Module):
    """``p(x, y, z) = p(y) p(z) p(x | y, z)`` over labelled and unlabelled points.

    :param alpha_weight: scale of the classifier's site ``y_aux`` per labelled point
        (``alpha / N_labelled``); 0 leaves it out.
    :param sup_batch: labelled points per step (Pyro's plate subsamples and scales them by
        ``N_labelled / sup_batch``); ``None``: all of them.
    :param sup_weight: scale ``w`` of every labelled site (on top of the plate's); the guide's
        ``z_sup`` must carry the same (:class:`~bayesdl.guides.ss_vae.SSVAEGuide`).
    """

    def __init__(
        self,
        decoder: ConditionalDecoder,
        classifier: Classifier,
        latent_dim: int,
        alpha_weight: float,
        sup_batch: int | None = None,
        sup_weight: float = 1.0,
    ):
        super().__init__()
        self.decoder, self.classifier = decoder, classifier
        self.latent_dim, self.alpha_weight, self.sup_batch = latent_dim, alpha_weight, sup_batch
        self.sup_weight = sup_weight

    def _prior(self, x: torch.Tensor, n: int) -> tuple:
        k = self.decoder.num_classes
        p_y = dist.Categorical(logits=x.new_zeros(k), validate_args=False).expand([n])
        p_z = dist.Normal(x.new_zeros(()), x.new_ones(()), validate_args=False)
        return p_y, p_z.expand([n, self.latent_dim]).to_event(1)

    def forward(self, x: torch.Tensor, x_sup: torch.Tensor, y_sup: torch.Tensor) -> None:
        """Score the unlabelled ``x`` (plate ``data``) and the labelled ``(x_sup, y_sup)``."""
        pyro.module("decoder", self.decoder)
        pyro.module("classifier", self.classifier)
        with (
            pyro.plate("labelled", len(x_sup), subsample_size=self.sup_batch) as i,
            poutine.scale(scale=self.sup_weight),
        ):
            xs, ys = x_sup.index_select(0, i), y_sup.index_select(0, i)
            p_y, p_z = self._prior(xs, len(i))
            pyro.sample("y_sup", p_y, obs=ys)
            z = pyro.sample("z_sup", p_z)
            pyro.sample("x_sup", self.decoder.likelihood(ys, z), obs=xs)
            if self.alpha_weight > 0:  # the paper's alpha E_labelled[log q(y | x)]
                with poutine.scale(scale=self.alpha_weight):
                    q_y = dist.Categorical(logits=self.classifier(xs), validate_args=False)
                    pyro.sample("y_aux", q_y, obs=ys)
        with pyro.plate("data", len(x)) as i:
            xb = x.index_select(0, i)
            p_y, p_z = self._prior(xb, len(i))
            y = pyro.sample("y", p_y)
            z = pyro.sample("z", p_z)
            pyro.sample("x", self.decoder.likelihood(y, z), obs=xb)
