"""Bayesian neural-network classifier: ``y | x, theta ~ Categorical(softmax f_theta(x))``,
``theta ~ p(theta)``; predictions average the network over ``q(theta)``.

Each layer holds its weights ``theta`` (and a point-estimated bias) and says how it perturbs
them; the network's ``kl()`` is the closed-form ``KL(q || p)`` that the model adds as a site
marked ``is_kl`` (so ``--kl-warmup`` anneals it). Layers (all ``nn.Module``; ``op`` is a dense
layer or a 2-d convolution):

* :class:`Deterministic` -- ``theta`` a point (MLE, or MAP with ``N(0, s^2)``'s ``-log p``);
* :class:`Dropout`       -- ``theta_j = m_j z_j / (1 - p)``, ``z_j ~ Bern(1 - p)`` per input
  unit and datum (Gal & Ghahramani 2016): dropout read as ``q(theta)``, no KL term;
* :class:`MeanField`     -- ``q = N(theta, sigma^2)``, prior ``N(0, s^2)``, exact Gaussian KL
  (Blundell et al. 2015), sampled by local reparameterization (Kingma et al. 2015):
  ``b = x theta + sqrt(x^2 sigma^2) eps``;
* :class:`SparseVD`      -- ``q = N(theta, alpha theta^2)``, log-uniform prior, Molchanov et
  al.'s (2017) KL approximation, weights with ``log alpha >= 3`` pruned in eval mode.

For weights sampled as Pyro latent sites (no local reparameterization), :func:`bayesian_`
turns :class:`Deterministic` layers' ``theta`` into ``PyroSample`` priors, as TyXe does.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import pyro
import pyro.distributions as dist
import torch
import torch.nn.functional as F
from pyro.nn import PyroSample
from pyro.nn.module import to_pyro_module_
from torch import nn

K1, K2, K3 = 0.63576, 1.87320, 1.48695  # Molchanov et al. 2017, eq. 14
LOG_ALPHA_MAX = 8.0
C1, C2, C3 = 1.16145124, -1.50204118, 0.58629921  # Kingma et al. 2015, eq. 7 (alpha <= 1)
#: ``0.5 log alpha - E log |xi|`` tends to ``(gamma + log 2) / 2`` as ``alpha -> infinity``: the
#: log-uniform KL's additive constant that makes ``KL -> 0`` there (Molchanov's fit's ``k1``)
KL_CONST = (0.5772156649015329 + math.log(2)) / 2


class Deterministic(nn.Module):
    """A point-estimated dense (``shape = (out, in)``) or conv (``(out, in, kh, kw)``) layer;
    ``prior_scale`` adds MAP's ``-log N(theta | 0, s^2)`` (up to a constant) as ``kl()``."""

    def __init__(self, shape: tuple[int, ...], prior_scale: float | None = None):
        super().__init__()
        fan_in = math.prod(shape[1:])
        self.theta = nn.Parameter(torch.empty(shape).uniform_(-1, 1) / math.sqrt(fan_in))
        self.bias = nn.Parameter(torch.zeros(shape[0]))
        self.conv = len(shape) == 4
        self.prior_scale = prior_scale
        self.sample = True  # False: the mean network (for the posterior mean / pruned net)

    def op(self, x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None = None) -> torch.Tensor:
        """``x theta^T + b`` or the 2-d convolution of ``x`` with ``w``."""
        return F.conv2d(x, w, b) if self.conv else F.linear(x, w, b)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.op(x, self.theta, self.bias)

    def kl(self) -> torch.Tensor | None:
        """``-log p(theta)`` for MAP, nothing for MLE."""
        if self.prior_scale is None:
            return None
        return 0.5 * (self.theta**2).sum() / self.prior_scale**2


class Dropout(Deterministic):
    """``q(theta)``: each input unit's weights are 0 with probability ``p``, else
    ``theta / (1 - p)``; a fresh mask per datum. No KL term."""

    def __init__(self, shape: tuple[int, ...], p: float):
        super().__init__(shape)
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.op(F.dropout(x, self.p, training=self.sample), self.theta, self.bias)

    def kl(self) -> None:
        return None


class MeanField(Deterministic):
    """``q(theta) = N(theta, sigma^2)``, prior ``N(0, s^2)``; pre-activations are sampled
    (local reparameterization): ``b ~ N(x theta, x^2 sigma^2)``."""

    def __init__(self, shape: tuple[int, ...], prior_scale: float = 1.0, log_sigma2: float = -10.0):
        super().__init__(shape, prior_scale)
        self.log_sigma2 = nn.Parameter(torch.full(shape, log_sigma2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mu = self.op(x, self.theta, self.bias)
        if not self.sample:
            return mu
        var = self.op(x * x, self.log_sigma2.exp())
        return mu + var.clamp_min(1e-16).sqrt() * torch.randn_like(mu)

    def kl(self) -> torch.Tensor:
        """``sum KL(N(theta, sigma^2) || N(0, s^2))``, in closed form."""
        s2 = self.prior_scale**2
        return (
            0.5
            * (
                (self.log_sigma2.exp() + self.theta**2) / s2 - 1 - self.log_sigma2 + math.log(s2)
            ).sum()
        )


def neg_kl_log_uniform(log_alpha: torch.Tensor) -> torch.Tensor:
    """``-KL(N(theta, alpha theta^2) || log-uniform)`` per weight, Molchanov et al.'s fit:
    ``k1 sigmoid(k2 + k3 log alpha) - 0.5 log(1 + 1/alpha) - k1``."""
    return K1 * torch.sigmoid(K2 + K3 * log_alpha) - 0.5 * F.softplus(-log_alpha) - K1


def neg_kl_gaussian_dropout(log_alpha: torch.Tensor) -> torch.Tensor:
    """``-KL(N(theta, alpha theta^2) || log-uniform)`` per weight for ``alpha <= 1``, Kingma,
    Salimans & Welling's (2015) fit of ``0.5 log alpha - E_{xi ~ N(1, alpha)} log |xi|``:
    ``0.5 log alpha + c1 alpha + c2 alpha^2 + c3 alpha^3 - (gamma + log 2) / 2``."""
    a = log_alpha.exp()
    return 0.5 * log_alpha + C1 * a + C2 * a**2 + C3 * a**3 - KL_CONST


class SparseVD(MeanField):
    """Sparse variational dropout: ``q(theta) = N(theta, alpha theta^2)`` with the additive
    reparameterization (learn ``theta`` and ``log sigma^2``), log-uniform prior; in eval mode
    weights with ``log alpha >= threshold`` are set to 0."""

    def __init__(self, shape: tuple[int, ...], threshold: float = 3.0):
        super().__init__(shape, prior_scale=1.0, log_sigma2=-10.0)
        self.threshold = threshold

    @property
    def log_alpha(self) -> torch.Tensor:
        """``log alpha = log sigma^2 - log theta^2``, clipped to ``[-8, 8]``."""
        log_alpha = self.log_sigma2 - torch.log(self.theta**2 + 1e-8)
        return log_alpha.clamp(-LOG_ALPHA_MAX, LOG_ALPHA_MAX)

    @property
    def mask(self) -> torch.Tensor:
        """The weights kept at test time: ``log alpha < threshold``."""
        return (self.log_alpha < self.threshold).to(self.theta.dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            return super().forward(x)
        keep = self.mask
        mu = self.op(x, self.theta * keep, self.bias)
        if not self.sample:
            return mu
        var = self.op(x * x, self.log_sigma2.exp() * keep)
        return mu + var.clamp_min(1e-16).sqrt() * torch.randn_like(mu)

    def kl(self) -> torch.Tensor:
        """The approximate ``KL(q || log-uniform)``, summed over the weights."""
        return -neg_kl_log_uniform(self.log_alpha).sum()


LayerFactory = Callable[[tuple[int, ...]], Deterministic]


class MLP(nn.Module):
    """``f(x) = W_L relu(... relu(W_1 x))`` over flattened inputs (LeNet-300-100 with
    ``hidden = (300, 100)``)."""

    def __init__(self, d_in: int, hidden: tuple[int, ...], n_classes: int, layer: LayerFactory):
        super().__init__()
        sizes = (d_in, *hidden, n_classes)
        shapes = zip(sizes[1:], sizes[:-1], strict=True)  # (out, in)
        self.layers = nn.ModuleList(layer(s) for s in shapes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x.reshape(x.shape[0], -1)
        for lay in self.layers[:-1]:
            h = F.relu(lay(h))
        return self.layers[-1](h)


class LeNet5(nn.Module):
    """Caffe's LeNet-5 on 28 x 28 images: conv 20@5x5, pool, conv 50@5x5, pool, 500, classes."""

    def __init__(self, n_classes: int, layer: LayerFactory):
        super().__init__()
        shapes = [(20, 1, 5, 5), (50, 20, 5, 5), (500, 800), (n_classes, 500)]
        self.layers = nn.ModuleList(layer(s) for s in shapes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x.reshape(x.shape[0], 1, 28, 28)
        h = F.max_pool2d(F.relu(self.layers[0](h)), 2)
        h = F.max_pool2d(F.relu(self.layers[1](h)), 2)
        h = F.relu(self.layers[2](h.flatten(1)))
        return self.layers[3](h)


def kl(net: nn.Module) -> torch.Tensor | None:
    """``sum_l KL(q_l || p_l)`` of a network's layers (``None`` when no layer has one)."""
    terms = [t for lay in net.layers if (t := lay.kl()) is not None]
    return sum(terms) if terms else None


def prior_std(shape: tuple[int, ...], s: float) -> float:
    """The prior's standard deviation ``s / sqrt(fan_in)`` (pre-activations of order ``s``)."""
    return s / math.sqrt(math.prod(shape[1:]))


def bayesian_(net: nn.Module, s: float) -> nn.Module:
    """Make every layer's ``theta`` a latent site with prior ``N(0, s^2 / fan_in)``, in place
    (TyXe's way); the bias stays a parameter. Returns ``net``, now a ``PyroModule``."""
    to_pyro_module_(net)
    for lay in net.layers:
        shape = tuple(lay.theta.shape)
        std = prior_std(shape, s)
        lay.theta = PyroSample(dist.Normal(0.0, std).expand(shape).to_event(len(shape)))
    return net


class BNN(nn.Module):
    """The model ``p(y, theta | x) = p(theta) prod_n Cat(y_n | softmax f_theta(x_n))``, with
    minibatches through ``pyro.plate("data", N)`` and the layers' closed-form KL as a site."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        # the network's parameters are this module's own: the engine trains them directly
        # (as Pyro's ELBOModule does), so no pyro.module call is paid at every step
        data = pyro.plate("data", x.shape[0])
        idx = data.indices
        logits = self.net(x[idx])  # outside the plate: sampled weights are global
        with data:
            obs = None if y is None else y[idx]
            pyro.sample("y", dist.Categorical(logits=logits, validate_args=False), obs=obs)
        if (k := kl(self.net)) is not None:
            unit = dist.Unit(-k)
            pyro.sample("kl", unit, obs=unit.sample(), infer={"is_kl": True})
        return logits
