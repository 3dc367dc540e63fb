"""Likelihoods ``p(y | f)`` of a network's output ``f``, one observation per datum inside the
caller's ``pyro.plate("data")`` (a minibatch's log-likelihood scaled by ``N / B``); a piece of
:mod:`bayesdl.models.bayesian_net`."""

from __future__ import annotations

import math
from collections.abc import Callable

import pyro
import pyro.distributions as dist
import torch
import torch.nn.functional as F
from pyro.distributions import TorchDistribution, constraints
from torch import nn

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
