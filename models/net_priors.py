"""Priors ``p(theta)`` over a network's flattened Bayesian parameters, each with its
``KL(N(mu, sigma^2) || p)`` (closed form where there is one, Molchanov et al.'s (2017)
approximation for the log-uniform, one Monte Carlo draw otherwise); a piece of
:mod:`bayesdl.models.bayesian_net`."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import pyro.distributions as dist
import torch
import torch.nn.functional as F
from pyro.distributions import TorchDistribution, constraints
from torch import nn

from bayesdl.models.net_weights import Weight, flat_size, flatten, unflatten

K1, K2, K3 = 0.63576, 1.87320, 1.48695  # Molchanov et al. 2017, eq. 14
LOG_ALPHA_MAX = 8.0
C1, C2, C3 = 1.16145124, -1.50204118, 0.58629921  # Kingma et al. 2015, eq. 7 (alpha <= 1)
#: ``0.5 log alpha - E log |xi|`` tends to ``(gamma + log 2) / 2`` as ``alpha -> infinity``: the
#: log-uniform KL's additive constant that makes ``KL -> 0`` there (Molchanov's fit's ``k1``)
KL_CONST = (0.5772156649015329 + math.log(2)) / 2


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


# ----------------------------------------------------------------------------- priors


def kl_normal_normal(
    mu: torch.Tensor, sigma: torch.Tensor, mu0: torch.Tensor, sigma0: torch.Tensor
) -> torch.Tensor:
    """``sum_i KL(N(mu_i, sigma_i^2) || N(mu0_i, sigma0_i^2))``
    ``= sum log(sigma0 / sigma) + (sigma^2 + (mu - mu0)^2) / (2 sigma0^2) - 1/2``."""
    return (
        torch.log(sigma0) - torch.log(sigma) + (sigma**2 + (mu - mu0) ** 2) / (2 * sigma0**2) - 0.5
    ).sum(-1)


class Prior(nn.Module):
    """A prior ``p(theta)`` over the flattened parameters.

    ``dist()`` is the distribution (event shape ``[D]``); ``kl_normal`` is
    ``KL(N(mu, sigma^2) || p)`` given a draw ``theta`` of the Gaussian (used only where no closed
    form is known); ``neg_log_prob`` is ``-log p(theta)`` (MAP); ``expected_neg_log_prob`` is
    ``E_q[-log p(W)]`` for the dropout family ``W = M z / r``, ``z ~ Bern(r)``.
    """

    family = "prior"
    #: whether ``kl_normal`` and ``expected_neg_log_prob`` are closed forms (never read ``theta``)
    exact_kl = False

    def dist(self) -> TorchDistribution:
        """``p(theta)``."""
        raise NotImplementedError

    def kl_normal(self, mu: torch.Tensor, sigma: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
        """One-draw Monte Carlo ``log q(theta) - log p(theta)`` (unbiased for the KL)."""
        q = dist.Normal(mu, sigma).to_event(1)
        return q.log_prob(theta) - self.dist().log_prob(theta)

    def neg_log_prob(self, value: torch.Tensor) -> torch.Tensor:
        """``-log p(value)``."""
        return -self.dist().log_prob(value)

    def expected_neg_log_prob(
        self, m: torch.Tensor, keep: torch.Tensor, theta: torch.Tensor
    ) -> torch.Tensor:
        """``E[-log p(W)]`` for ``W_i = m_i z_i / r_i``, ``z_i ~ Bern(r_i)``: one draw
        (``theta``) unless the prior has the closed form."""
        return self.neg_log_prob(theta)

    def loc(self) -> torch.Tensor | None:
        """The prior mean where it has one (the guide may start there)."""
        return None


class NormalPrior(Prior):
    """``theta_i ~ N(mu0_i, s_i^2)`` independently (``s_i`` per layer: ``scale / sqrt(fan_in)``
    for dense and conv weights, ``scale`` for the rest)."""

    family = "normal"
    exact_kl = True

    def __init__(self, loc: torch.Tensor, scale: torch.Tensor, init: torch.Tensor | None = None):
        super().__init__()
        self.register_buffer("mu0", loc.detach().clone())
        self.register_buffer("sigma0", scale.detach().clone())
        self.init = None if init is None else init.detach().clone()

    def dist(self) -> TorchDistribution:
        return dist.Normal(self.mu0, self.sigma0).to_event(1)

    def kl_normal(self, mu, sigma, theta):
        """Closed form (:func:`kl_normal_normal`)."""
        return kl_normal_normal(mu, sigma, self.mu0, self.sigma0)

    def neg_log_prob(self, value):
        """``sum (value - mu0)^2 / (2 s^2)`` (the constant ``log s sqrt(2 pi)`` dropped)."""
        return (((value - self.mu0) / self.sigma0) ** 2).sum(-1) / 2

    def expected_neg_log_prob(self, m, keep, theta):
        """``sum [r (m / r - mu0)^2 + (1 - r) mu0^2] / (2 s^2)``: exact."""
        r = keep
        sq = r * (m / r - self.mu0) ** 2 + (1 - r) * self.mu0**2
        return (sq / self.sigma0**2).sum(-1) / 2

    def loc(self) -> torch.Tensor | None:
        return self.init


class ScaleMixtureNormal(TorchDistribution):
    """``pi N(0, sigma1^2) + (1 - pi) N(0, sigma2^2)`` per element (Blundell et al. 2015, eq. 7)."""

    arg_constraints = {"sigma1": constraints.positive, "sigma2": constraints.positive}
    support = constraints.real
    has_rsample = False

    def __init__(self, pi: float, sigma1: torch.Tensor, sigma2: torch.Tensor, validate_args=None):
        self.pi = float(pi)
        self.sigma1, self.sigma2 = torch.broadcast_tensors(sigma1, sigma2)
        super().__init__(self.sigma1.shape, torch.Size(), validate_args=False)

    def expand(self, batch_shape, _instance=None):
        s = torch.Size(batch_shape)
        return ScaleMixtureNormal(self.pi, self.sigma1.expand(s), self.sigma2.expand(s))

    def sample(self, sample_shape=()):
        shape = self._extended_shape(sample_shape)
        with torch.no_grad():
            wide = torch.rand(shape, device=self.sigma1.device) < self.pi
            scale = torch.where(wide, self.sigma1.expand(shape), self.sigma2.expand(shape))
            return scale * torch.randn(shape, device=self.sigma1.device)

    def log_prob(self, value):
        a = dist.Normal(0.0, self.sigma1).log_prob(value) + math.log(self.pi)
        b = dist.Normal(0.0, self.sigma2).log_prob(value) + math.log1p(-self.pi)
        return torch.logaddexp(a, b)


class ScaleMixturePrior(Prior):
    """Blundell et al.'s scale mixture ``pi N(0, sigma1^2) + (1 - pi) N(0, sigma2^2)``; no closed
    KL: one Monte Carlo draw."""

    family = "scale-mixture"

    def __init__(
        self, size: int, pi: float = 0.5, sigma1: float = 1.0, sigma2: float = math.exp(-6)
    ):
        super().__init__()
        if not 0 < pi < 1:
            raise ValueError(f"scale mixture: pi must be in (0, 1), got {pi}")
        self.pi = pi
        self.register_buffer("sigma1", torch.full((size,), float(sigma1)))
        self.register_buffer("sigma2", torch.full((size,), float(sigma2)))

    def dist(self) -> TorchDistribution:
        return ScaleMixtureNormal(self.pi, self.sigma1, self.sigma2).to_event(1)


class _StandIn(TorchDistribution):
    """An improper density per element (``log_prob`` in the subclass) with no draws of its
    own: :meth:`sample` returns ``N(0, stand_in^2)`` draws so that a model run without a guide
    (Pyro's shape checks) works."""

    arg_constraints: dict = {}
    support = constraints.real
    has_rsample = False

    def __init__(self, stand_in: torch.Tensor, validate_args=None):
        self.stand_in = stand_in
        super().__init__(stand_in.shape, torch.Size(), validate_args=False)

    def expand(self, batch_shape, _instance=None):
        return type(self)(self.stand_in.expand(torch.Size(batch_shape)))

    def sample(self, sample_shape=()):
        shape = self._extended_shape(sample_shape)
        with torch.no_grad():
            return self.stand_in.expand(shape) * torch.randn(shape, device=self.stand_in.device)


class LogUniform(_StandIn):
    """The improper log-uniform ``p(|w|) ~ 1 / |w|`` per element (its ``log_prob`` is
    ``-log |w|``); draws are :class:`_StandIn`'s."""

    def log_prob(self, value):
        return -torch.log(value.abs().clamp_min(1e-30))


class LogUniformPrior(Prior):
    """The sparse VD prior ``p(log |w|) = const`` (Molchanov et al. 2017): with
    ``q = N(mu, alpha mu^2)``, ``-KL ~= k1 sigmoid(k2 + k3 log alpha) - 0.5 log(1 + 1/alpha) - k1``
    (their eq. 14), with ``log alpha = log sigma^2 - log mu^2`` clipped to ``[-8, 8]``."""

    family = "log-uniform"
    exact_kl = True  # kl_normal (the dropout family's expectation is refused with this prior)

    def __init__(self, stand_in: torch.Tensor):
        super().__init__()
        self.register_buffer("stand_in", stand_in.detach().clone())

    def dist(self) -> TorchDistribution:
        return LogUniform(self.stand_in).to_event(1)

    def kl_normal(self, mu, sigma, theta):
        log_alpha = (2 * torch.log(sigma) - torch.log(mu**2 + 1e-8)).clamp(
            -LOG_ALPHA_MAX, LOG_ALPHA_MAX
        )
        return -neg_kl_log_uniform(log_alpha).sum(-1)


class Flat(_StandIn):
    """The improper flat density ``p(w) = const`` (its ``log_prob`` is 0); draws are
    :class:`_StandIn`'s."""

    def log_prob(self, value):
        return torch.zeros_like(value)


class FlatPrior(Prior):
    """The improper flat prior ``p(theta) = const``: no prior term at all. With the dropout
    families (``W = M z / r``) the KL is then ``-H(z)``, 0 for a fixed rate: dropout trained
    without weight decay; with a point (``map``) it is the MLE."""

    family = "flat"
    exact_kl = True

    def __init__(self, stand_in: torch.Tensor):
        super().__init__()
        self.register_buffer("stand_in", stand_in.detach().clone())

    def dist(self) -> TorchDistribution:
        return Flat(self.stand_in).to_event(1)

    def neg_log_prob(self, value):
        """``-log p = 0`` (no term: ``None``)."""
        return None

    def expected_neg_log_prob(self, m, keep, theta):
        """``E[-log p(W)] = 0`` (no term: ``None``)."""
        return None


class PerParameterPrior(Prior):
    """A Pyro distribution per parameter: ``theta``'s density is the sum of the parts'."""

    family = "per-parameter"

    def __init__(self, weights: Sequence[Weight], parts: Sequence[TorchDistribution]):
        super().__init__()
        self.weights, self.parts = list(weights), list(parts)

    def dist(self) -> TorchDistribution:
        return Concatenated(self.weights, self.parts)


class Concatenated(TorchDistribution):
    """Independent parts (one per parameter, each with the parameter's shape as its event
    shape) over the flat vector ``theta``."""

    arg_constraints: dict = {}
    support = constraints.real_vector
    has_rsample = False

    def __init__(self, weights, parts, batch_shape=(), validate_args=None):
        self.weights, self.parts = list(weights), list(parts)
        size = flat_size(self.weights)
        super().__init__(torch.Size(batch_shape), torch.Size([size]), validate_args=False)

    def expand(self, batch_shape, _instance=None):
        return Concatenated(self.weights, self.parts, batch_shape)

    def sample(self, sample_shape=()):
        shape = torch.Size(sample_shape) + self.batch_shape
        return torch.cat([p.sample(shape).reshape(*shape, -1) for p in self.parts], dim=-1)

    def log_prob(self, value):
        values = unflatten(self.weights, value)
        return sum(
            p.log_prob(values[w.name]) for w, p in zip(self.weights, self.parts, strict=True)
        )


def normal_scales(weights: Sequence[Weight], scale: float) -> torch.Tensor:
    """Per-element prior sd ``scale / sqrt(fan_in)``: pre-activations of order ``scale``."""
    return torch.cat([torch.full((w.numel,), scale / math.sqrt(w.fan_in)) for w in weights])


def parameter_prior(
    weights: Sequence[Weight], fn: Callable[[str, torch.Tensor], TorchDistribution], params: dict
) -> Prior:
    """The prior of a callable ``fn(name, param) -> distribution`` (a scalar distribution is
    broadcast over the parameter); all-Gaussian parts become one :class:`NormalPrior` (closed
    KL)."""
    parts = []
    for w in weights:
        d = fn(w.name, params[w.name])
        if not isinstance(d, torch.distributions.Distribution):
            raise TypeError(f"prior for {w.name}: expected a distribution, got {type(d).__name__}")
        shape = torch.Size(w.shape)
        full = d.batch_shape + d.event_shape
        if d.event_shape == shape:
            pass
        elif full == shape:
            d = d.to_event(len(d.batch_shape))
        elif d.event_shape == torch.Size() and len(d.batch_shape) <= len(shape):
            d = d.expand(shape).to_event(len(shape))
        else:
            raise ValueError(
                f"prior for {w.name}: distribution of shape {tuple(full)} does not fit the "
                f"parameter's {tuple(shape)}"
            )
        parts.append(d)
    normal = []
    for d in parts:
        base = d.base_dist if isinstance(d, torch.distributions.Independent) else d
        if type(base) not in (dist.Normal, torch.distributions.Normal):
            break
        normal.append(base)
    else:
        if normal:
            loc = torch.cat(
                [b.loc.expand(w.shape).reshape(-1) for b, w in zip(normal, weights, strict=True)]
            )
            sd = torch.cat(
                [b.scale.expand(w.shape).reshape(-1) for b, w in zip(normal, weights, strict=True)]
            )
            init = getattr(fn, "init", None)
            return NormalPrior(loc, sd, None if init is None else flatten(weights, init))
    return PerParameterPrior(weights, parts)
