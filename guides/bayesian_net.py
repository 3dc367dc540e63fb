"""Variational families ``q(theta)`` of :class:`bayesdl.models.bayesian_net.BayesianNet`.

Each guide samples the one site ``theta`` (the network's Bayesian parameters, flattened), starts
at the network's own weights, and says how to compute ``KL(q || p)`` and which local estimator
the model may use while training (``local``):

* :class:`MeanField`  -- ``q = prod_i N(mu_i, sigma_i^2)`` (Blundell et al. 2015), trained with
  local reparameterization (``local="lrt"``), Flipout (``"flipout"``) or sampled weights (``None``);
* :class:`SparseVD`   -- ``q = N(theta, sigma^2)``, ``alpha = sigma^2 / theta^2``, weights with
  ``log alpha >= 3`` pruned in predictions (Molchanov et al. 2017);
* :class:`Dropout`    -- ``W = M z / r``, ``z ~ Bern(r)`` per input unit (MC dropout, Gal &
  Ghahramani 2016), per weight (DropConnect), or per input unit with a learned rate relaxed to a
  Concrete while training (concrete dropout, Gal et al. 2017); ``KL ~= E_q[-log p(W)] - H``;
* :class:`GaussianDropout` -- ``W = theta xi``, ``xi ~ N(1, alpha)``, ``alpha`` learned per layer
  or per weight in ``(0, 1)`` (Kingma et al. 2015), the log-uniform prior's KL (their eq. 7);
* :class:`Point`      -- ``q = delta(theta - mu)``: MAP (``KL`` is ``-log p(mu)``).

MLE has no guide sites at all: every parameter stays a point estimate of the network.
"""

from __future__ import annotations

import math
import weakref
from collections.abc import Sequence

import pyro
import pyro.distributions as dist
import torch
import torch.nn.functional as F
from pyro import poutine
from pyro.poutine.runtime import get_plates
from torch import nn

from bayesdl.models.bayesian_net import FlatPrior, LogUniformPrior, Prior, Weight
from bayesdl.models.net_plumbing import unit_shape
from bayesdl.models.net_priors import LOG_ALPHA_MAX, neg_kl_gaussian_dropout

TEMPERATURE = 0.1  # of the Concrete relaxation (Gal et al. 2017 use 0.1)


class NetGuide(nn.Module):
    """The common part: the site ``theta`` (its density masked out of the ELBO: the model adds
    ``KL(q || p)`` itself) and the last draw, so the model can tell its own draw from a
    replayed or vectorized one.

    A training step that reads no draw of ``theta`` has no site ``theta`` at all, in the guide
    or the model (as the built-in ``bnn``'s layer classes, which held ``q`` themselves): one
    draw (gradients on, no enclosing plate), a KL in closed form (``exact_kl``, set from the
    prior by :func:`make_guide`), and a local estimator that computes every parameter of
    ``theta`` from ``q``'s parameters (:meth:`draw_free`). The guide then leaves the step's
    mark (:meth:`take_step`), and the model draws the noise per datum in the layers."""

    local: str | None = None

    def __init__(self, weights: Sequence[Weight]):
        super().__init__()
        self.weights = list(weights)
        self._drawn = None
        self._marked = False
        self.exact_kl = False

    def forward(self, *args, **kwargs) -> torch.Tensor | None:
        state = self.__dict__  # plain attributes: no nn.Module.__setattr__ at every step
        state["_marked"] = False
        if not self.weights:
            return None
        if self.exact_kl and torch.is_grad_enabled() and self.draw_free() and not get_plates():
            state["_marked"] = True
            return None
        with poutine.mask(mask=False):
            theta = self.draw()
        self._drawn = weakref.ref(theta)
        return theta

    def draw_free(self) -> str | None:
        """The local estimator that computes every parameter of ``theta`` from ``q``'s
        parameters alone (``"lrt"``: its mean and variance; ``"dropout"``, ``"point"``: its
        mean), or ``None``; resolved once."""
        kind = self.__dict__.get("_draw_free", False)
        if kind is False:
            kind = self.__dict__["_draw_free"] = self._draw_free()
        return kind

    def _draw_free(self) -> str | None:
        if self.local == "lrt":
            if all(w.kind != "other" and w.attr in ("weight", "bias") for w in self.weights):
                return "lrt"
        return None

    def take_step(self) -> str | None:
        """The model's question after the guide ran: did it leave this step without ``theta``
        (then the local estimator :meth:`draw_free` to use)? Asked once per guide call."""
        marked, self.__dict__["_marked"] = self._marked, False
        return self.draw_free() if marked and torch.is_grad_enabled() else None

    def drew(self, theta: torch.Tensor) -> bool:
        """Whether ``theta`` is this guide's latest draw (then the model may use ``local``)."""
        return self._drawn is not None and self._drawn() is theta

    def draw(self) -> torch.Tensor:
        """Sample the site ``theta``."""
        raise NotImplementedError

    @staticmethod
    def site(q) -> torch.Tensor:
        """The site ``theta ~ q``, its density masked in the distribution itself (so that
        ``log q(theta)``, which the ELBO would zero, is never computed)."""
        return pyro.sample("theta", q.mask(False))

    def mean(self) -> torch.Tensor:
        """``E_q[theta]``: the weights of the mean network."""
        raise NotImplementedError

    def variance(self) -> torch.Tensor:
        """``Var_q[theta]`` (for local reparameterization)."""
        raise NotImplementedError

    def kl(self, prior: Prior, theta: torch.Tensor) -> torch.Tensor | None:
        """``KL(q || p)`` (closed form or approximated; one draw ``theta`` where neither)."""
        raise NotImplementedError


class MeanField(NetGuide):
    """``q(theta) = prod_i N(mu_i, sigma_i^2)``, ``mu`` started at the network's weights and
    ``sigma`` at ``init_scale``."""

    def __init__(
        self,
        weights: Sequence[Weight],
        init: torch.Tensor,
        init_scale: float = 1e-3,
        local: str | None = "lrt",
    ):
        super().__init__(weights)
        self.local = local
        self.loc = nn.Parameter(init.detach().clone())
        self.log_sigma = nn.Parameter(torch.full_like(self.loc, math.log(init_scale)))

    def sigma(self) -> torch.Tensor:
        """``sigma = exp(log sigma)``."""
        return self.log_sigma.exp()

    def draw(self):
        return self.site(dist.Normal(self.loc, self.sigma()).to_event(1))

    def mean(self):
        return self.loc

    def variance(self):
        return (2 * self.log_sigma).exp()

    def kl(self, prior, theta):
        return prior.kl_normal(self.loc, self.sigma(), theta)


class LogVarianceMeanField(MeanField):
    """:class:`MeanField`'s ``q``, its sds learned as ``log sigma^2`` as the built-in ``bnn``'s
    layer classes learned theirs (an optimizer's step on ``log sigma`` is then half
    :class:`MeanField`'s): the built-in ``bnn``'s meanfield."""

    def __init__(
        self,
        weights: Sequence[Weight],
        init: torch.Tensor,
        init_scale: float = 1e-3,
        local: str | None = "lrt",
    ):
        NetGuide.__init__(self, weights)
        self.local = local
        self.loc = nn.Parameter(init.detach().clone())
        self.log_sigma2 = nn.Parameter(torch.full_like(self.loc, 2 * math.log(init_scale)))

    def sigma(self) -> torch.Tensor:
        """``sigma = exp(log sigma^2 / 2)``."""
        return (0.5 * self.log_sigma2).exp()

    def variance(self):
        return self.log_sigma2.exp()


class SparseVD(NetGuide):
    """Sparse variational dropout: ``q = N(theta, sigma^2)`` learned as ``theta`` and
    ``log sigma^2`` (the additive reparameterization), ``log alpha = log sigma^2 - log theta^2``;
    in predictions (gradients off) weights with ``log alpha >= threshold`` are exactly 0."""

    local = "lrt"

    def __init__(
        self,
        weights: Sequence[Weight],
        init: torch.Tensor,
        log_sigma2: float = -10.0,
        threshold: float = 3.0,
    ):
        super().__init__(weights)
        self.loc = nn.Parameter(init.detach().clone())
        self.log_sigma2 = nn.Parameter(torch.full_like(self.loc, log_sigma2))
        self.threshold = threshold

    @property
    def log_alpha(self) -> torch.Tensor:
        """``log alpha``, clipped to ``[-8, 8]``."""
        la = self.log_sigma2 - torch.log(self.loc**2 + 1e-8)
        return la.clamp(-LOG_ALPHA_MAX, LOG_ALPHA_MAX)

    @property
    def keep(self) -> torch.Tensor:
        """The weights kept when predicting: ``log alpha < threshold``."""
        return self.log_alpha < self.threshold

    def sigma(self) -> torch.Tensor:
        """``sigma = exp(log sigma^2 / 2)``."""
        return (0.5 * self.log_sigma2).exp()

    def draw(self):
        loc, sd = self.loc, self.sigma()
        if not torch.is_grad_enabled():
            keep = self.keep
            loc, sd = loc * keep, torch.where(keep, sd, torch.full_like(sd, 1e-12))
        return self.site(dist.Normal(loc, sd).to_event(1))

    def mean(self):
        return self.loc if torch.is_grad_enabled() else self.loc * self.keep

    def variance(self):
        return self.log_sigma2.exp()

    def kl(self, prior, theta):
        return prior.kl_normal(self.loc, self.sigma(), theta)


class Point(NetGuide):
    """``q(theta) = delta(theta - mu)``: MAP, ``KL`` reduced to ``-log p(mu)``."""

    def __init__(self, weights: Sequence[Weight], init: torch.Tensor):
        super().__init__(weights)
        self.loc = nn.Parameter(init.detach().clone())

    def _draw_free(self):
        return "point"

    def draw(self):
        return self.site(dist.Delta(self.loc, event_dim=1))

    def mean(self):
        return self.loc

    def kl(self, prior, theta):
        return prior.neg_log_prob(self.loc)


class Dropout(NetGuide):
    """``W = M z / r`` for dense and conv weights (other parameters: points ``M``):
    ``z ~ Bern(r)`` per input unit (``per="unit"``: MC dropout; ``learn=True``: concrete
    dropout, one learned rate per layer) or per weight (``per="weight"``: DropConnect).

    ``KL(q || p) ~= E_q[-log p(W)] - sum_l K_l H(p_l)`` (Gal 2016, the entropy term only where
    the rate is learned; ``K_l`` the layer's mask units); exact ``E_q`` for a Gaussian prior.
    """

    def __init__(
        self,
        weights: Sequence[Weight],
        init: torch.Tensor,
        p: float = 0.1,
        per: str = "unit",
        learn: bool = False,
    ):
        super().__init__(weights)
        if not 0 < p < 1:
            raise ValueError(f"dropout rate must be in (0, 1), got {p}")
        self.per, self.learn, self.rate = per, learn, p
        self.local = "dropout" if per == "unit" else None
        self.loc = nn.Parameter(init.detach().clone())
        self.masked = [w for w in self.weights if w.kind != "other" and w.attr == "weight"]
        self.index = {w.name: i for i, w in enumerate(self.masked)}
        logit = math.log(p / (1 - p))
        rate = torch.full((len(self.masked),), logit)
        if learn:
            self.logit_p = nn.Parameter(rate)
        else:
            self.register_buffer("logit_p", rate)

    def _draw_free(self):
        """MC dropout (per unit) covers every masked weight unless a conv is grouped; the
        other parameters are points."""
        if self.local == "dropout" and all(w.groups == 1 for w in self.masked):
            return "dropout"
        return None

    def drop(self, w: Weight, module: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """The input ``x`` of the layer of ``w`` dropped: ``x * z / r``, ``z ~ Bern(r)`` per
        datum and input unit (channel); a Concrete ``z`` while the rate is learned."""
        if not self.learn and x.dim() == 2 and isinstance(module, nn.Linear):
            return F.dropout(x, self.rate, training=True)
        if not self.learn and isinstance(module, nn.Conv2d) and x.dim() == 4:
            return F.dropout2d(x, self.rate, training=True)
        keep = self.keep_prob(w)
        return x * self.unit_mask(keep, unit_shape(module, x), x) / keep

    def mask_shape(self, w: Weight) -> tuple[int, ...]:
        """The shape of one draw's mask, broadcast against the weight."""
        if self.per == "weight":
            return w.shape
        return (1, w.shape[1], *([1] * (len(w.shape) - 2)))

    def keep_prob(self, w: Weight) -> torch.Tensor:
        """``r_l = 1 - p_l`` of the layer owning ``w``."""
        return torch.sigmoid(-self.logit_p[self.index[w.name]])

    def unit_mask(self, keep: torch.Tensor, shape: tuple[int, ...], like: torch.Tensor):
        """``z ~ Bern(r)`` of ``shape``; a Concrete relaxation when the rate is learned and
        gradients are on."""
        u = torch.rand(shape, device=like.device, dtype=like.dtype).clamp(1e-6, 1 - 1e-6)
        if self.learn and torch.is_grad_enabled():
            logits = torch.log(keep) - torch.log1p(-keep) + torch.log(u) - torch.log1p(-u)
            return torch.sigmoid(logits / TEMPERATURE)
        return (u < keep).to(like.dtype)

    def draw(self):
        keep = torch.sigmoid(-self.logit_p)
        units = [math.prod(self.mask_shape(w)) for w in self.masked]
        r = torch.cat([keep[i].expand(n) for i, n in enumerate(units)]) if units else keep
        if self.learn and torch.is_grad_enabled():
            q = dist.RelaxedBernoulli(torch.tensor(TEMPERATURE, device=r.device), probs=r)
        else:
            q = dist.Bernoulli(probs=r)
        z = pyro.sample("theta_mask", q.to_event(1), infer={"is_auxiliary": True})
        batch, parts, start = z.shape[:-1], [], 0
        for w in self.weights:
            m = self.loc[w.slice]
            if w.name in self.index:
                i = self.index[w.name]
                n = units[i]
                zi = z[..., start : start + n].reshape(*batch, *self.mask_shape(w))
                start += n
                parts.append((m.reshape(w.shape) * zi / keep[i]).reshape(*batch, -1))
            else:
                parts.append(m.expand(*batch, w.numel))
        return self.site(dist.Delta(torch.cat(parts, -1), event_dim=1))

    def mean(self):
        return self.loc

    def rates(self) -> dict[str, float]:
        """The dropout rate ``p_l`` of every masked layer, by its weight's name."""
        p = torch.sigmoid(self.logit_p.detach()).tolist()
        return {w.name: p[i] for i, w in enumerate(self.masked)}

    def kl(self, prior, theta):
        if isinstance(prior, FlatPrior) and not self.learn:
            return None  # no prior term and no entropy term: no KL site
        keep = torch.sigmoid(-self.logit_p)
        r = torch.ones_like(self.loc)
        pieces = []
        for w in self.weights:
            pieces.append(
                keep[self.index[w.name]].expand(w.numel) if w.name in self.index else r[w.slice]
            )
        r = torch.cat(pieces) if pieces else r
        out = prior.expected_neg_log_prob(self.loc, r, theta)  # None: a flat prior
        if self.learn:
            p = 1 - keep
            entropy = -(p * torch.log(p) + keep * torch.log(keep))
            k = torch.tensor(
                [math.prod(self.mask_shape(w)) for w in self.masked], dtype=entropy.dtype
            )
            neg_h = -(k.to(entropy.device) * entropy).sum()
            out = neg_h if out is None else out + neg_h
        return out


class GaussianDropout(NetGuide):
    """Gaussian (variational) dropout, Kingma, Salimans & Welling (2015): dense and conv weights
    ``W = theta xi``, ``xi ~ N(1, alpha)``, i.e. ``q(W) = N(theta, alpha theta^2)``, with ``alpha``
    learned per layer (``per="layer"``) or per weight (``per="weight"``); other parameters are
    points. ``alpha = sigmoid(rho)`` stays in ``(0, 1)``, where the paper's KL fit holds (a
    smooth clip: no dead gradient at the bound). With the log-uniform prior the KL depends on
    ``alpha`` only (:func:`~bayesdl.models.net_priors.neg_kl_gaussian_dropout`). Trained by local
    reparameterization; ``alpha`` is Bernoulli dropout's ``p / (1 - p)`` (same mean and variance
    of the noise), so ``p = alpha / (1 + alpha)`` is the equivalent rate."""

    local = "lrt"

    def __init__(
        self, weights: Sequence[Weight], init: torch.Tensor, p: float = 0.1, per: str = "layer"
    ):
        super().__init__(weights)
        if not 0 < p < 0.5:
            raise ValueError(f"gaussian-dropout: the starting rate must be in (0, 0.5), got {p}")
        if per not in ("layer", "weight"):
            raise ValueError(f"gaussian-dropout: alpha per 'layer' or 'weight', not {per!r}")
        self.per = per
        self.loc = nn.Parameter(init.detach().clone())
        self.masked = [w for w in self.weights if w.kind != "other" and w.attr == "weight"]
        sizes = [1 if per == "layer" else w.numel for w in self.masked]
        alpha = p / (1 - p)
        self.rho = nn.Parameter(torch.full((sum(sizes),), math.log(alpha / (1 - alpha))))
        # theta's element -> its entry of rho; len(rho) (a constant alpha of 0) for the points
        index = torch.full((len(init),), sum(sizes), dtype=torch.long)
        self.parts, start = [], 0  # each masked layer's entries of rho
        for w, n in zip(self.masked, sizes, strict=True):
            index[w.slice] = torch.arange(start, start + n).repeat_interleave(w.numel // n)
            self.parts.append(slice(start, start + n))
            start += n
        self.register_buffer("index", index, persistent=False)

    @property
    def log_alpha(self) -> torch.Tensor:
        """``log alpha`` of every entry of ``rho`` (per layer or per weight)."""
        return F.logsigmoid(self.rho)

    def _per_element(self, v: torch.Tensor) -> torch.Tensor:
        """``v`` (one value per entry of ``rho``) spread over ``theta``; 0 for the points."""
        return torch.cat([v, v.new_zeros(1)])[self.index]

    def sigma(self) -> torch.Tensor:
        """``sd = sqrt(alpha) |theta|`` (0 for the points)."""
        return self._per_element((0.5 * self.log_alpha).exp()) * self.loc.abs()

    def draw(self):
        sd = self.sigma().clamp_min(1e-12)
        return pyro.sample("theta", dist.Normal(self.loc, sd).to_event(1))

    def mean(self):
        return self.loc

    def variance(self):
        return self._per_element(self.log_alpha.exp()) * self.loc**2

    def alphas(self) -> dict[str, float]:
        """``alpha`` of every masked layer (the mean over its weights when per weight)."""
        a = self.log_alpha.detach().exp()
        return {w.name: a[s].mean().item() for w, s in zip(self.masked, self.parts, strict=True)}

    def rates(self) -> dict[str, float]:
        """The equivalent dropout rate ``p = alpha / (1 + alpha)`` of every masked layer (the
        mean over its weights when per weight)."""
        a = self.log_alpha.detach().exp()
        p = a / (1 + a)
        return {w.name: p[s].mean().item() for w, s in zip(self.masked, self.parts, strict=True)}

    def kl(self, prior, theta):
        """``sum_i KL(N(theta_i, alpha_i theta_i^2) || log-uniform)``: it depends on ``alpha``
        only; the points add nothing (the improper prior has no MAP term)."""
        neg = neg_kl_gaussian_dropout(self.log_alpha)
        if self.per == "layer":
            neg = neg * neg.new_tensor([w.numel for w in self.masked])
        return -neg.sum()


GUIDES = (
    "meanfield",
    "flipout",
    "mc-dropout",
    "dropconnect",
    "concrete-dropout",
    "gaussian-dropout",
    "sparse-vd",
    "map",
    "mle",
)


def make_guide(
    name: str,
    weights: Sequence[Weight],
    init: torch.Tensor,
    prior: Prior | None,
    *,
    init_scale: float = 1e-3,
    dropout: float = 0.1,
    prune_threshold: float = 3.0,
    local_reparam: bool = True,
    alpha_per: str = "layer",
) -> NetGuide:
    """The guide ``name`` (one of :data:`GUIDES`) over ``weights``, started at ``init``."""
    q = _family(
        name, weights, init, prior, init_scale, dropout, prune_threshold, local_reparam, alpha_per
    )
    q.exact_kl = prior is not None and prior.exact_kl
    return q


def _family(
    name, weights, init, prior, init_scale, dropout, prune_threshold, local_reparam, alpha_per
) -> NetGuide:
    if name not in GUIDES:
        raise ValueError(f"unknown guide {name!r}: choose {', '.join(GUIDES)}")
    log_uniform = ("meanfield", "flipout", "sparse-vd", "gaussian-dropout")
    if isinstance(prior, LogUniformPrior) and name not in log_uniform:
        raise ValueError(
            f"the log-uniform prior is improper: guide {name!r} needs a proper prior "
            "(use meanfield, flipout, sparse-vd or gaussian-dropout with it)"
        )
    if isinstance(prior, FlatPrior) and name not in (
        "mc-dropout",
        "dropconnect",
        "concrete-dropout",
        "map",
    ):
        raise ValueError(
            f"the flat prior is improper: guide {name!r} needs a proper prior (the flat prior "
            "goes with mc-dropout, dropconnect, concrete-dropout or map)"
        )
    if name == "gaussian-dropout":
        if prior is not None and not isinstance(prior, LogUniformPrior):
            raise ValueError(
                "gaussian-dropout's KL is that of the log-uniform prior (Kingma et al. 2015): "
                "use prior='log-uniform' (its default)"
            )
        return GaussianDropout(weights, init, dropout, alpha_per)
    if name in ("meanfield", "flipout"):
        local = "flipout" if name == "flipout" else ("lrt" if local_reparam else None)
        return MeanField(weights, init, init_scale, local)
    if name == "sparse-vd":
        return SparseVD(weights, init, threshold=prune_threshold)
    if name == "map":
        return Point(weights, init)
    if name == "mle":
        return NetGuide([])
    per = "weight" if name == "dropconnect" else "unit"
    return Dropout(weights, init, dropout, per, learn=name == "concrete-dropout")
