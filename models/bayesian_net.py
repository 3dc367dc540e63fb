"""Any network, Bayesian: ``y | x, theta ~ p(y | f_theta(x))``, ``theta ~ p(theta)``, for the
user's own ``nn.Module`` ``f``.

TyXe's idea (Ritter & Karaletsos 2022) without a parallel copy of every layer: the chosen
parameters of the network, flattened and concatenated, are one latent site ``theta``; the
network runs on them by ``torch.func.functional_call``, so the user's module is never changed.
The pieces, each named from the math:

* :func:`select` -- which parameters are Bayesian (``exclude=`` / ``only=`` by module type or
  name); the rest stay point estimates, trained as the network's own parameters;
* priors over ``theta`` (:class:`NormalPrior`, :class:`ScaleMixturePrior`,
  :class:`LogUniformPrior`, :class:`PerParameterPrior`), each with its
  ``KL(N(mu, sigma^2) || p)`` -- closed form where there is one, Molchanov et al.'s (2017)
  approximation for the log-uniform, one Monte Carlo draw otherwise;
* likelihoods ``p(y | f)`` (:class:`Categorical`, :class:`Bernoulli`, :class:`Gaussian` with fixed,
  learned or predicted noise, :class:`Poisson`), each inside ``pyro.plate("data", N)`` so a
  minibatch's log-likelihood is scaled by ``N / B``;
* :class:`BayesianNet` -- the model. ``theta``'s own density terms are masked out of the ELBO
  and ``KL(q || p)`` is added as one site marked ``is_kl`` (as :mod:`bayesdl.models.bnn` does),
  so every variational family, even those without a density (dropout), trains by the same
  estimator and ``--kl-warmup`` anneals it.

While training (gradients on) and ``theta`` is the guide's own single draw, dense and conv
layers do not use the sampled weights but a cheaper, lower-variance estimator of the same
expected log-likelihood, chosen by the guide (``guide.local``):

* ``"lrt"`` -- local reparameterization (Kingma et al. 2015): ``b ~ N(x mu, x^2 sigma^2)`` per
  datum;
* ``"flipout"`` -- Wen et al. (2018): ``b = x mu + ((x * s_in) dW) * s_out`` with the shared
  perturbation ``dW = theta - mu`` decorrelated across the minibatch by random signs;
* ``"dropout"`` -- a dropout mask on the layer's input units per datum (Gal & Ghahramani 2016).

Predictions (gradients off) always use sampled weights: one network per posterior draw,
vectorized over draws with ``torch.func.vmap`` where the network allows it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import pyro
import pyro.distributions as dist
import torch
import torch.nn.functional as F
from pyro import poutine
from pyro.distributions import TorchDistribution, constraints
from torch import nn
from torch.func import functional_call

from bayesdl.models.bnn import LOG_ALPHA_MAX, neg_kl_log_uniform

#: inputs x posterior draws pushed through the network at once when predicting
ROWS_PER_PASS = 1 << 15
#: modules whose output is linear in the weights: local reparameterization and Flipout apply
LINEAR = (nn.Linear,)
CONV = (nn.Conv1d, nn.Conv2d, nn.Conv3d)


# ----------------------------------------------------------------------------- which parameters


@dataclass(frozen=True)
class Weight:
    """One parameter of the network that is part of ``theta`` (``theta[offset:offset+numel]``)."""

    name: str  # "0.weight": the parameter's name in the network
    module: str  # "0": its module's name
    attr: str  # "weight"
    shape: tuple[int, ...]
    offset: int
    kind: str  # "linear", "conv" or "other": which local estimators apply
    fan_in: int  # inputs per output unit of a dense/conv weight; 1 otherwise

    @property
    def numel(self) -> int:
        """Number of scalars."""
        return math.prod(self.shape)

    @property
    def slice(self) -> slice:
        """Where it lies in ``theta``."""
        return slice(self.offset, self.offset + self.numel)


Spec = str | type | Sequence[str | type] | None


def _as_list(spec: Spec) -> list:
    if spec is None:
        return []
    if isinstance(spec, str | type):
        return [spec]
    return list(spec)


def _matches(specs: list, module_name: str, module: nn.Module, param_name: str) -> bool:
    """A module type (or its class name), a module name or a parameter name (or a prefix of
    either at a ``.``) matches."""
    for s in specs:
        if isinstance(s, type) and isinstance(module, s):
            return True
        if isinstance(s, str):
            if s == type(module).__name__:
                return True
            for name in (module_name, param_name):
                if name and (name == s or name.startswith(s + ".")):
                    return True
    return False


def select(net: nn.Module, exclude: Spec = None, only: Spec = None) -> list[Weight]:
    """The network's parameters that become Bayesian, in ``named_parameters`` order:
    all of them, less those ``exclude`` matches, and only those ``only`` matches when given.

    ``exclude``/``only`` take module types (``nn.BatchNorm2d``), class names (``"LayerNorm"``),
    module names (``"4"``, ``"head"``) or parameter names (``"head.bias"``), or lists of them.
    """
    excl, keep = _as_list(exclude), _as_list(only)
    out, offset = [], 0
    for mname, module in net.named_modules():
        for attr, p in module.named_parameters(recurse=False):
            pname = f"{mname}.{attr}" if mname else attr
            if not p.requires_grad or _matches(excl, mname, module, pname):
                continue
            if keep and not _matches(keep, mname, module, pname):
                continue
            kind = (
                "linear"
                if isinstance(module, LINEAR)
                else "conv"
                if isinstance(module, CONV)
                else "other"
            )
            fan_in = math.prod(p.shape[1:]) if kind != "other" and attr == "weight" else 1
            w = Weight(pname, mname, attr, tuple(p.shape), offset, kind, fan_in)
            out.append(w)
            offset += w.numel
    return out


def flat_size(weights: Sequence[Weight]) -> int:
    """``dim theta``."""
    return sum(w.numel for w in weights)


def unflatten(weights: Sequence[Weight], theta: torch.Tensor) -> dict[str, torch.Tensor]:
    """``theta [..., D]`` as the network's parameters ``{name: [..., *shape]}`` (views)."""
    batch = theta.shape[:-1]
    return {w.name: theta[..., w.slice].reshape(*batch, *w.shape) for w in weights}


def flatten(weights: Sequence[Weight], values: dict[str, torch.Tensor]) -> torch.Tensor:
    """The inverse of :func:`unflatten` (one vector ``[D]``)."""
    return torch.cat([values[w.name].detach().reshape(-1) for w in weights])


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


class LogUniform(TorchDistribution):
    """The improper log-uniform ``p(|w|) ~ 1 / |w|`` per element (its ``log_prob`` is
    ``-log |w|``). It has no draws: :meth:`sample` returns ``N(0, stand_in^2)`` draws so that a
    model run without a guide (Pyro's shape checks) works."""

    arg_constraints: dict = {}
    support = constraints.real
    has_rsample = False

    def __init__(self, stand_in: torch.Tensor, validate_args=None):
        self.stand_in = stand_in
        super().__init__(stand_in.shape, torch.Size(), validate_args=False)

    def expand(self, batch_shape, _instance=None):
        return LogUniform(self.stand_in.expand(torch.Size(batch_shape)))

    def sample(self, sample_shape=()):
        shape = self._extended_shape(sample_shape)
        with torch.no_grad():
            return self.stand_in.expand(shape) * torch.randn(shape, device=self.stand_in.device)

    def log_prob(self, value):
        return -torch.log(value.abs().clamp_min(1e-30))


class LogUniformPrior(Prior):
    """The sparse VD prior ``p(log |w|) = const`` (Molchanov et al. 2017): with
    ``q = N(mu, alpha mu^2)``, ``-KL ~= k1 sigmoid(k2 + k3 log alpha) - 0.5 log(1 + 1/alpha) - k1``
    (their eq. 14), with ``log alpha = log sigma^2 - log mu^2`` clipped to ``[-8, 8]``."""

    family = "log-uniform"

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


# ----------------------------------------------------------------------------- likelihoods


class Likelihood(nn.Module):
    """``p(y | f)``, one observation per datum, inside the caller's ``pyro.plate("data")``.

    ``f`` has shape ``[*batch, n, *out]`` (``batch_dims = len(batch) + 1``); the per-datum shape
    of ``y`` (its event shape) is remembered from the training data.
    """

    classification = False

    def __init__(self) -> None:
        super().__init__()
        self.event_shape: tuple[int, ...] | None = None

    def event(self, out: tuple[int, ...]) -> tuple[int, ...]:
        """The per-datum shape of ``y`` (from the training data; else from the output's)."""
        if self.event_shape is not None:
            return self.event_shape
        return () if math.prod(out) == 1 else tuple(out)

    def dist(self, f: torch.Tensor, batch_dims: int) -> TorchDistribution:
        """``p(y | f)`` with batch shape ``f.shape[:batch_dims]``."""
        raise NotImplementedError

    def forward(self, f: torch.Tensor, y: torch.Tensor | None, batch_dims: int) -> torch.Tensor:
        if y is not None and self.event_shape is None:
            self.event_shape = tuple(y.shape[1:])
        return pyro.sample("y", self.dist(f, batch_dims), obs=y)

    def _reshape(self, f: torch.Tensor, batch_dims: int, event: tuple[int, ...]) -> torch.Tensor:
        lead, out = f.shape[:batch_dims], f.shape[batch_dims:]
        if math.prod(out) != math.prod(event):
            raise ValueError(
                f"the network's output per datum has shape {tuple(out)}; the likelihood needs "
                f"{math.prod(event)} values per datum (y of shape {event})"
            )
        return f.reshape(*lead, *event)


class Categorical(Likelihood):
    """``y ~ Categorical(softmax f)``: ``f`` are logits over the last dimension."""

    classification = True

    def event(self, out):
        return () if self.event_shape is None else self.event_shape

    def dist(self, f, batch_dims):
        event = self.event(tuple(f.shape[batch_dims:-1]))
        return dist.Categorical(logits=f, validate_args=False).to_event(len(event))

    def probs(self, f: torch.Tensor, batch_dims: int = 2) -> torch.Tensor:
        """Class probabilities ``softmax f``."""
        return f.softmax(-1)


class Bernoulli(Likelihood):
    """``y ~ Bernoulli(sigmoid f)``: one logit per binary outcome."""

    classification = True

    def dist(self, f, batch_dims):
        event = self.event(tuple(f.shape[batch_dims:]))
        logits = self._reshape(f, batch_dims, event)
        return dist.Bernoulli(logits=logits, validate_args=False).to_event(len(event))

    def probs(self, f: torch.Tensor, batch_dims: int = 2) -> torch.Tensor:
        """``[1 - p, p]`` on a new last dimension (two classes); ``f [M, n, *out]``."""
        p = torch.sigmoid(self._reshape(f, batch_dims, self.event(tuple(f.shape[batch_dims:]))))
        return torch.stack([1 - p, p], -1)


class Gaussian(Likelihood):
    """``y ~ N(mu, sigma^2)`` with ``mu = f`` and the noise sd ``sigma``:

    * a number -- fixed;
    * ``"learned"`` -- one homoskedastic ``sigma``, the model's ``pyro.param("sigma")`` (a point
      estimate), started at ``noise_init`` (default: a tenth of the sd of ``y``);
    * ``"predicted"`` -- heteroskedastic: the network's second output ``g`` per target,
      ``sigma = softplus(g) + 1e-3`` (the output's last dimension holds ``[mu, g]``).
    """

    def __init__(self, noise: float | str = "learned", noise_init: float | None = None):
        super().__init__()
        if isinstance(noise, str) and noise not in ("learned", "predicted"):
            raise ValueError(f"noise must be a number, 'learned' or 'predicted', got {noise!r}")
        if not isinstance(noise, str) and not noise > 0:
            raise ValueError(f"noise must be positive, got {noise}")
        self.noise, self.noise_init = noise, noise_init

    def event(self, out):
        if self.event_shape is not None:
            return self.event_shape
        n = math.prod(out) // (2 if self.noise == "predicted" else 1)
        return () if n == 1 else (n,)

    def mean_sd(
        self,
        f: torch.Tensor,
        batch_dims: int,
        y: torch.Tensor | None = None,
        sigma: torch.Tensor | None = None,
    ):
        """``(mu, sigma)`` of every datum, each of shape ``[*batch, n, *event]`` (``sigma``:
        the fitted value of a learned noise sd, read outside the fit)."""
        event = self.event(tuple(f.shape[batch_dims:]))
        lead = f.shape[:batch_dims]
        if self.noise == "predicted":
            h = f.reshape(*lead, -1)
            m = h.shape[-1] // 2
            if h.shape[-1] != 2 * math.prod(event):
                raise ValueError(
                    "noise='predicted' needs two outputs per target (mean and noise), got "
                    f"{h.shape[-1]} for y of shape {event}"
                )
            mu = h[..., :m].reshape(*lead, *event)
            sd = (F.softplus(h[..., m:]) + 1e-3).reshape(*lead, *event)
            return mu, sd
        mu = self._reshape(f, batch_dims, event)
        if self.noise == "learned" and sigma is not None:
            sd = torch.as_tensor(sigma, dtype=mu.dtype, device=mu.device)
        elif self.noise == "learned":
            sd = pyro.param("sigma", lambda: self._sigma_init(y), constraint=constraints.positive)
        else:
            sd = torch.as_tensor(float(self.noise), dtype=mu.dtype, device=mu.device)
        return mu, sd.expand(mu.shape)

    def _sigma_init(self, y: torch.Tensor | None) -> torch.Tensor:
        if self.noise_init is not None:
            return torch.tensor(float(self.noise_init))
        if y is not None and y.numel() > 1:
            return (0.1 * y.float().std()).clamp_min(1e-3).detach().cpu()
        return torch.tensor(0.1)

    def dist(self, f, batch_dims, y=None):
        mu, sd = self.mean_sd(f, batch_dims, y)
        return dist.Normal(mu, sd, validate_args=False).to_event(mu.dim() - batch_dims)

    def forward(self, f, y, batch_dims):
        if y is not None and self.event_shape is None:
            self.event_shape = tuple(y.shape[1:])
        return pyro.sample("y", self.dist(f, batch_dims, y), obs=y)


class Poisson(Likelihood):
    """``y ~ Poisson(exp f)`` (log link): counts."""

    def dist(self, f, batch_dims):
        event = self.event(tuple(f.shape[batch_dims:]))
        rate = self._reshape(f, batch_dims, event).clamp(max=30).exp()
        return dist.Poisson(rate, validate_args=False).to_event(len(event))


LIKELIHOODS: dict[str, Callable[..., Likelihood]] = {
    "categorical": Categorical,
    "bernoulli": Bernoulli,
    "gaussian": Gaussian,
    "poisson": Poisson,
}


# ----------------------------------------------------------------------------- the model


def _op(module: nn.Module, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """The module's linear map of ``x`` by the weight ``w`` (no bias)."""
    if isinstance(module, nn.Linear):
        return F.linear(x, w)
    return module._conv_forward(x, w, None)


def _per_channel(v: torch.Tensor, out: torch.Tensor, module: nn.Module) -> torch.Tensor:
    """A bias-shaped ``[C]`` tensor broadcastable against the module's output."""
    if isinstance(module, nn.Linear):
        return v
    return v.reshape(-1, *([1] * (out.dim() - 2)))


def _signs(shape: tuple[int, ...], like: torch.Tensor) -> torch.Tensor:
    return torch.randint(0, 2, shape, device=like.device).to(like.dtype) * 2 - 1


def _unit_shape(module: nn.Module, x: torch.Tensor) -> tuple[int, ...]:
    """One dropout mask entry per datum and input unit (channel, for convolutions)."""
    if isinstance(module, nn.Linear):
        return (x.shape[0], *([1] * (x.dim() - 2)), x.shape[-1])
    return (x.shape[0], x.shape[1], *([1] * (x.dim() - 2)))


class BayesianNet(nn.Module):
    """The model ``p(y, theta | x) = p(theta) prod_n p(y_n | f_theta(x_n))`` for the user's
    network ``net``; its variational family is :attr:`guide` (an ``nn.Module`` that samples the
    site ``theta``). Call it as ``bnet(x, y=None)``; fit it with ``bayesdl.fit(bnet, data=...)``.

    Sites: ``theta`` (the Bayesian parameters, flattened; its own density masked, see the
    module docstring), ``f`` (the network's output, deterministic), ``y`` (observed) and
    ``kl`` (``-KL(q || p)``, marked ``is_kl``).
    """

    def __init__(
        self,
        net: nn.Module,
        weights: Sequence[Weight],
        prior: Prior | None,
        likelihood: Likelihood,
        guide: nn.Module,
        spec: dict[str, Any] | None = None,
    ):
        super().__init__()
        self.net, self.prior, self.likelihood, self.guide = net, prior, likelihood, guide
        self.weights = list(weights)
        self.spec = dict(spec or {})  # how bayesdl.bnn.bayesian built it (to rebuild it)

    @property
    def guide_name(self) -> str:
        """The variational family's name (``meanfield``, ``flipout``, ...)."""
        return self.spec.get("guide", type(self.guide).__name__)

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        theta = None
        if self.weights:
            with poutine.mask(mask=False):  # KL(q || p) is the "kl" site below
                theta = pyro.sample("theta", self.prior.dist())
        data = pyro.plate("data", x.shape[0])
        idx = data.indices
        f = self.network(x[idx], theta)  # outside the plate: the weights are global
        batch_dims = 1 if theta is None else max(1, theta.dim() - 1)  # draws' dims, then data's
        with data:
            pyro.deterministic("f", f, event_dim=f.dim() - batch_dims)
            self.likelihood(f, None if y is None else y[idx], batch_dims)
        if theta is not None:
            kl = self.guide.kl(self.prior, theta)
            if kl is not None:
                unit = dist.Unit(-kl)
                pyro.sample("kl", unit, obs=unit.sample(), infer={"is_kl": True})
        return f

    # -- the network on theta

    def network(self, x: torch.Tensor, theta: torch.Tensor | None) -> torch.Tensor:
        """``f_theta(x)``: ``[n, *out]`` for one ``theta [D]``; ``[*batch[:-1], n, *out]`` for
        draws ``theta [*batch, D]`` (``batch[-1]`` is the data plate's dimension, 1)."""
        if theta is None:
            return self.net(x)
        if theta.dim() > 1:
            return self._network_draws(x, theta)
        if torch.is_grad_enabled() and self.guide.local and self.guide.drew(theta):
            return self._network_local(x, theta)
        return functional_call(self.net, unflatten(self.weights, theta), (x,))

    def _network_draws(self, x: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
        batch = theta.shape[:-1]
        if batch[-1] != 1:
            raise ValueError(
                f"theta has batch shape {tuple(batch)}: its last batch dimension must be the "
                "data plate's (size 1)"
            )
        flat = theta.reshape(-1, theta.shape[-1])

        def one(t: torch.Tensor) -> torch.Tensor:
            return functional_call(self.net, unflatten(self.weights, t), (x,))

        step = max(1, ROWS_PER_PASS // max(1, x.shape[0]))
        draw = torch.func.vmap(one, randomness="different")
        out = torch.cat([draw(flat[i : i + step]) for i in range(0, len(flat), step)])
        return out.reshape(*batch[:-1], *out.shape[1:])

    def _network_local(self, x: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
        """The forward pass with the guide's local estimator on dense and conv layers."""
        guide, kind = self.guide, self.guide.local
        mu = guide.mean()
        params, mean = unflatten(self.weights, theta), unflatten(self.weights, mu)
        if kind == "lrt":
            spread = unflatten(self.weights, guide.variance())
        elif kind == "flipout":
            spread = unflatten(self.weights, theta - mu)  # dW, one draw shared by the batch
        groups: dict[str, dict[str, Weight]] = {}
        for w in self.weights:
            if w.kind != "other" and w.attr in ("weight", "bias"):
                groups.setdefault(w.module, {})[w.attr] = w
        handles = []
        try:
            for mname, ws in groups.items():
                module = self.net.get_submodule(mname)
                ww, wb = ws.get("weight"), ws.get("bias")
                if kind == "dropout":
                    if ww is not None and getattr(module, "groups", 1) == 1:
                        params[ww.name] = mean[ww.name]
                        handles.append(module.register_forward_pre_hook(self._dropout_hook(ww)))
                    continue
                for w in (ww, wb):
                    if w is not None:
                        params[w.name] = mean[w.name]
                pick = (
                    None if ww is None else spread[ww.name],
                    None if wb is None else spread[wb.name],
                )
                hook = self._lrt_hook(*pick) if kind == "lrt" else self._flipout_hook(*pick)
                handles.append(module.register_forward_hook(hook))
            return functional_call(self.net, params, (x,))
        finally:
            for h in handles:
                h.remove()

    @staticmethod
    def _lrt_hook(var_w: torch.Tensor | None, var_b: torch.Tensor | None):
        """``b = x mu + sqrt(x^2 sigma_w^2 + sigma_b^2) eps``, ``eps ~ N(0, 1)`` per datum."""

        def hook(module, args, out):
            x = args[0]
            v = 0.0
            if var_w is not None:
                v = _op(module, x * x, var_w)
            if var_b is not None:
                v = v + _per_channel(var_b, out, module)
            return out + torch.sqrt(torch.as_tensor(v).clamp_min(1e-16)) * torch.randn_like(out)

        return hook

    @staticmethod
    def _flipout_hook(dw: torch.Tensor | None, db: torch.Tensor | None):
        """``b = x mu + ((x * s_in) dW) * s_out + db`` with random signs per datum (per datum
        and channel for convolutions): pseudo-independent perturbations from one draw ``dW``."""

        def hook(module, args, out):
            x = args[0]
            if dw is not None:
                dense = isinstance(module, nn.Linear)
                s_in = _signs(tuple(x.shape) if dense else _unit_shape(module, x), x)
                pert = _op(module, x * s_in, dw)
                s_out = _signs(tuple(pert.shape) if dense else _unit_shape(module, pert), x)
                out = out + pert * s_out
            if db is not None:
                out = out + _per_channel(db, out, module)
            return out

        return hook

    def _dropout_hook(self, w: Weight):
        """``x * z / r`` with ``z ~ Bern(r)`` per datum and input unit (relaxed to a Concrete
        for a learned rate): the dense/conv layer's weights ``M z / r`` per datum."""
        guide = self.guide

        def hook(module, args):
            x = args[0]
            keep = guide.keep_prob(w)
            z = guide.unit_mask(keep, _unit_shape(module, x), x)
            return (x * z / keep, *args[1:])

        return hook
