"""Variational autoencoder (Kingma & Welling 2013): the lecture's Bayesian generative model

    z_n ~ N(0, I_L),        x_n | z_n ~ prod_d p(x_nd | f_theta(z_n)_d),

``f_theta`` an MLP decoder and ``p`` one of

* ``bernoulli``            -- binary pixels, ``Bern(sigmoid(f))``;
* ``continuous-bernoulli`` -- grayscale in [0, 1], ``CB(sigmoid(f))``
  (Loaiza-Ganem & Cunningham 2019);
* ``gaussian``             -- ``N(f, sigma^2)`` with one learned ``sigma``.

With a linear ``f(z) = W z + b`` and the Gaussian likelihood this is probabilistic PCA
(Tipping & Bishop 1999): ``x ~ N(b, W W^T + sigma^2 I)`` in closed form
(:func:`ppca_log_marginal`, :func:`ppca_max_log_likelihood`). Written as Pyro's
``examples/vae/vae.py``, with the data plate as the engine's minibatch plate; model and guide
are ``nn.Module`` s whose parameters the engine trains directly (as Pyro's ``ELBOModule``),
so no ``pyro.module`` call is paid at every step.
"""

from __future__ import annotations

import math

import pyro
import pyro.distributions as dist
import torch
from torch import nn

LIKELIHOODS = ("bernoulli", "continuous-bernoulli", "gaussian")
ACTIVATIONS = {"tanh": nn.Tanh, "softplus": nn.Softplus, "relu": nn.ReLU}


def mlp(sizes: list[int], activation: str = "tanh", final_activation: bool = False) -> nn.Module:
    """Linear layers ``sizes[0] -> ... -> sizes[-1]`` with ``activation`` between them."""
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2 or final_activation:
            layers.append(ACTIVATIONS[activation]())
    return nn.Sequential(*layers)


class Decoder(nn.Module):
    """``f_theta``: latent code ``z`` (..., L) to the likelihood of ``x`` (..., D)."""

    def __init__(
        self,
        latent_dim: int,
        hidden: tuple[int, ...],
        data_dim: int,
        likelihood: str = "bernoulli",
        activation: str = "tanh",
    ):
        super().__init__()
        self.likelihood_name = likelihood
        self.net = mlp([latent_dim, *hidden, data_dim], activation)
        if likelihood == "gaussian":
            self.log_sigma = nn.Parameter(torch.zeros(()))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """Logits (Bernoulli, continuous Bernoulli) or means (Gaussian)."""
        return self.net(z)

    def likelihood(self, z: torch.Tensor) -> dist.TorchDistribution:
        """``p(x | z)`` with the pixels as one event; no argument checks (no host syncs)."""
        f = self.net(z)
        if self.likelihood_name == "bernoulli":
            d = dist.Bernoulli(logits=f, validate_args=False)
        elif self.likelihood_name == "continuous-bernoulli":
            d = dist.ContinuousBernoulli(logits=f, validate_args=False)
        else:
            d = dist.Normal(f, self.log_sigma.exp().expand_as(f), validate_args=False)
        return d.to_event(1)

    def mean(self, z: torch.Tensor) -> torch.Tensor:
        """``E[x | z]`` (for pictures)."""
        f = self.net(z)
        if self.likelihood_name == "bernoulli":
            return torch.sigmoid(f)
        if self.likelihood_name == "continuous-bernoulli":
            return dist.ContinuousBernoulli(logits=f, validate_args=False).mean
        return f


class VAEModel(nn.Module):
    """``p(x, z) = prod_n N(z_n | 0, I) p(x_n | f_theta(z_n))`` as a Pyro model."""

    def __init__(self, decoder: Decoder, latent_dim: int):
        super().__init__()
        self.decoder = decoder
        self.latent_dim = latent_dim

    def forward(self, x: torch.Tensor) -> None:
        """Score ``x`` (N x D); the engine may subsample the plate ``data``."""
        with pyro.plate("data", x.shape[0]) as idx:
            x_b = x.index_select(0, idx)
            prior = dist.Normal(x_b.new_zeros(()), x_b.new_ones(()), validate_args=False)
            z = pyro.sample("z", prior.expand([x_b.shape[0], self.latent_dim]).to_event(1))
            pyro.sample("x", self.decoder.likelihood(z), obs=x_b)


def ppca_log_marginal(decoder: Decoder, x: torch.Tensor) -> torch.Tensor:
    """Exact ``log p(x_n)`` (N,) of a linear Gaussian decoder: ``N(x | b, W W^T + sigma^2 I)``."""
    linears = [m for m in decoder.net if isinstance(m, nn.Linear)]
    if decoder.likelihood_name != "gaussian" or len(linears) != 1:
        raise ValueError("the closed form needs a linear decoder with a Gaussian likelihood")
    w, b = linears[0].weight, linears[0].bias
    cov = w @ w.T + decoder.log_sigma.exp() ** 2 * torch.eye(len(b), dtype=w.dtype, device=w.device)
    return torch.distributions.MultivariateNormal(b, covariance_matrix=cov).log_prob(x)


def ppca_max_log_likelihood(x: torch.Tensor, latent_dim: int) -> float:
    """``max_{W, b, sigma} 1/N sum_n log N(x_n | b, W W^T + sigma^2 I)`` in closed form
    (Tipping & Bishop 1999): eigenvalues ``l_i`` of the sample covariance,
    ``sigma^2 = mean_{i > L} l_i``, value ``-1/2 [D log 2 pi + sum_{i<=L} log l_i
    + (D - L) log sigma^2 + D]``."""
    x = x.double()
    xc = x - x.mean(0)
    eig = torch.linalg.eigvalsh(xc.T @ xc / x.shape[0]).flip(0)
    d = x.shape[1]
    sigma2 = eig[latent_dim:].mean()
    logdet = eig[:latent_dim].log().sum() + (d - latent_dim) * sigma2.log()
    return float(-0.5 * (d * math.log(2 * math.pi) + logdet + d))
