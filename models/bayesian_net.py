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
  and ``KL(q || p)`` is added as one site marked ``is_kl`` (as the built-in ``bnn``'s layers did),
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

from collections.abc import Sequence
from typing import Any

import pyro
import pyro.distributions as dist
import torch
from torch import nn
from torch.func import functional_call

from bayesdl.models.net_likelihoods import (  # noqa: F401 - re-exported
    LIKELIHOODS,
    Bernoulli,
    Categorical,
    Gaussian,
    Likelihood,
    Poisson,
)
from bayesdl.models.net_plumbing import Plumbing
from bayesdl.models.net_priors import (  # noqa: F401 - re-exported
    Concatenated,
    Flat,
    FlatPrior,
    LogUniform,
    LogUniformPrior,
    NormalPrior,
    PerParameterPrior,
    Prior,
    ScaleMixtureNormal,
    ScaleMixturePrior,
    kl_normal_normal,
    normal_scales,
    parameter_prior,
)
from bayesdl.models.net_weights import (  # noqa: F401 - re-exported
    CONV,
    LINEAR,
    Spec,
    Weight,
    flat_size,
    flatten,
    select,
    unflatten,
)

#: inputs x posterior draws pushed through the network at once when predicting
ROWS_PER_PASS = 1 << 15


# ----------------------------------------------------------------------------- the model


class BayesianNet(nn.Module):
    """The model ``p(y, theta | x) = p(theta) prod_n p(y_n | f_theta(x_n))`` for the user's
    network ``net``; its variational family is :attr:`guide` (an ``nn.Module`` that samples the
    site ``theta``). Call it as ``bnet(x, y=None)``; fit it with ``bayesdl.fit(bnet, data=...)``.

    Sites: ``theta`` (the Bayesian parameters, flattened; its own density masked, see the
    module docstring), ``f`` (the network's output, deterministic; recorded with gradients
    off, as every predictive runs -- Pyro's ``Predictive`` and bayesdl's -- and left out of a
    training step's trace, where it cost half as much as the network's forward pass), ``y``
    (observed) and ``kl`` (``-KL(q || p)``, marked ``is_kl``).
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
        theta, kind = None, self.guide.take_step() if self.weights else None
        if self.weights and kind is None:  # masked: KL(q || p) is the "kl" site below
            theta = pyro.sample("theta", self.prior.dist().mask(False))
        data = pyro.plate("data", x.shape[0])
        idx = data.indices
        if kind is not None:  # a training step without theta: q's parameters in the layers
            f = self._network_local(x[idx], None, kind)
        else:
            f = self.network(x[idx], theta)  # outside the plate: the weights are global
        batch_dims = 1 if theta is None else max(1, theta.dim() - 1)  # draws' dims, then data's
        with data:
            if not torch.is_grad_enabled():  # predictions (a training step need not pay for it)
                pyro.deterministic("f", f, event_dim=f.dim() - batch_dims)
            self.likelihood(f, None if y is None else y[idx], batch_dims)
        if self.weights:
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
        return self.plumbing.call(x, self.plumbing.views(theta))

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

    @property
    def plumbing(self) -> Plumbing:
        """Where ``theta``'s parameters live in the network (resolved once per network)."""
        p = self.__dict__.get("_plumbing")
        if p is None or p.net is not self.net or p.source is not self.weights:
            p = self.__dict__["_plumbing"] = Plumbing(self.net, self.weights)
        return p

    def _network_local(
        self, x: torch.Tensor, theta: torch.Tensor | None, kind: str | None = None
    ) -> torch.Tensor:
        """The forward pass with the guide's local estimator ``kind`` (default ``guide.local``)
        on dense and conv layers, the other parameters at ``theta`` (``None``: at ``E_q``)."""
        guide, kind = self.guide, kind or self.guide.local
        mu = guide.mean()
        if kind == "point":
            return self.plumbing.call(x, self.plumbing.views(mu))
        if kind == "lrt":
            spread = guide.variance()
        elif kind == "flipout":
            spread = theta - mu  # dW, one draw shared by the batch
        else:
            return self.plumbing.call_local(x, kind, theta, mu, dropout=guide.drop)
        return self.plumbing.call_local(x, kind, theta, mu, spread)
