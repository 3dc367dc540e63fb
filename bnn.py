"""Any PyTorch network, Bayesian.

    import bayesdl, bayesdl.bnn as bnn
    bnet = bnn.bayesian(net, likelihood="gaussian", prior="normal", guide="flipout")
    post = bayesdl.fit(bnet, data={"x": x, "y": y}, steps=2000)
    post.predict({"x": x_new}, num_samples=100)["y"]     # predictive draws
    bnn.uncertainty(post, x_new)                          # noise and model parts of the sd
    bnet2 = bnn.bayesian(net2, likelihood="gaussian", prior=post.as_prior())

:func:`bayesian` wraps the network (which stays usable and unchanged) in the model
:class:`~bayesdl.models.bayesian_net.BayesianNet`; its variational family
(:mod:`bayesdl.guides.bayesian_net`) comes with it, so :func:`bayesdl.fit` needs no ``guide=``.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from typing import Any

import pyro.distributions as dist
import torch
from torch import nn

from bayesdl.guides.bayesian_net import GUIDES, MeanField, SparseVD, make_guide
from bayesdl.models.bayesian_net import (
    LIKELIHOODS,
    BayesianNet,
    FlatPrior,
    Gaussian,
    Likelihood,
    LogUniformPrior,
    NormalPrior,
    Prior,
    ScaleMixturePrior,
    Spec,
    flat_size,
    flatten,
    normal_scales,
    parameter_prior,
    select,
    unflatten,
)

__all__ = [
    "GUIDES",
    "LIKELIHOODS",
    "PRIORS",
    "BayesianNet",
    "as_prior",
    "bayesian",
    "mean_net",
    "sparsity",
    "uncertainty",
]

PRIORS = ("normal", "scale-mixture", "log-uniform", "flat")


def bayesian(
    net: nn.Module,
    *,
    likelihood: str | Likelihood,
    prior: str | Callable | Prior | None = None,
    guide: str = "meanfield",
    exclude: Spec = None,
    only: Spec = None,
    noise: float | str = "learned",
    noise_init: float | None = None,
    prior_scale: float = 10.0,
    mixture: tuple[float, float, float] = (0.5, 1.0, math.exp(-6)),
    init_scale: float = 1e-3,
    dropout: float = 0.1,
    prune_threshold: float = 3.0,
    local_reparam: bool = True,
    alpha_per: str = "layer",
) -> BayesianNet:
    """The Bayesian version of ``net``: ``y | x, theta ~ likelihood(f_theta(x))``,
    ``theta ~ prior``, with its variational family ``guide``.

    :param net: any ``nn.Module`` taking one input tensor ``x`` (batch first); it is not changed.
    :param likelihood: ``"categorical"`` (logits), ``"bernoulli"`` (one logit), ``"gaussian"``
        (with ``noise``), ``"poisson"`` (log rate), or a :class:`Likelihood`.
    :param prior: ``"normal"`` (``N(0, prior_scale^2 / fan_in)`` for dense and conv weights,
        ``N(0, prior_scale^2)`` for the rest; the default), ``"scale-mixture"`` (Blundell et al.;
        ``mixture = (pi, sigma1, sigma2)``), ``"log-uniform"`` (sparse VD; the default with
        ``guide="sparse-vd"``, the only choice with ``"gaussian-dropout"``), ``"flat"``
        (improper ``p(theta) = const``, no prior term: the dropout guides and ``map``, which
        it makes the MLE), or a callable
        ``(name, param) -> pyro distribution``, such as
        :func:`as_prior` of a fitted posterior.
    :param guide: one of :data:`GUIDES`: ``meanfield`` (local reparameterization for dense and
        conv layers; ``local_reparam=False`` samples the weights), ``flipout``, ``mc-dropout``,
        ``dropconnect``, ``concrete-dropout`` (rate ``dropout``), ``gaussian-dropout`` (Kingma
        et al. 2015: ``W = theta xi``, ``xi ~ N(1, alpha)``, ``alpha`` learned per ``alpha_per``
        ``"layer"`` or ``"weight"``, started at ``dropout / (1 - dropout)``), ``sparse-vd``,
        ``map``, ``mle``. Means start at the network's weights, sds at ``init_scale``.
    :param exclude: module types, class names, module or parameter names kept deterministic
        (point estimates), e.g. ``exclude=nn.BatchNorm2d`` or ``exclude="body"``.
    :param only: make only these Bayesian, e.g. ``only="head"`` (the last layer).
    :param noise: Gaussian noise sd: a number, ``"learned"`` or ``"predicted"`` (the network's
        output holds a mean and a noise output per target).
    """
    if not isinstance(net, nn.Module):
        raise TypeError(f"bayesian() takes an nn.Module, got {type(net).__name__}")
    if guide not in GUIDES:
        raise ValueError(f"unknown guide {guide!r}: choose {', '.join(GUIDES)}")
    spec = {k: v for k, v in locals().items() if k != "net"}
    lik = _likelihood(likelihood, noise, noise_init)
    params = dict(net.named_parameters())
    weights = [] if guide == "mle" else select(net, exclude, only)
    if guide != "mle" and not weights:
        raise ValueError("no parameter of the network is Bayesian: check exclude= and only=")
    if prior is None:
        prior = "log-uniform" if guide in ("sparse-vd", "gaussian-dropout") else "normal"
    p = _prior(prior, weights, params, prior_scale, mixture) if weights else None
    init = flatten(weights, params) if weights else torch.zeros(0)
    start = p.loc() if p is not None else None
    if start is not None:
        init = start
    q = make_guide(
        guide,
        weights,
        init,
        p,
        init_scale=init_scale,
        dropout=dropout,
        prune_threshold=prune_threshold,
        local_reparam=local_reparam,
        alpha_per=alpha_per,
    )
    return BayesianNet(net, weights, p, lik, q, spec)


def rebuild(bnet: BayesianNet, **changes: Any) -> BayesianNet:
    """The same network, prior and likelihood with other settings (e.g. another ``guide``)."""
    return bayesian(bnet.net, **{**bnet.spec, **changes})


def _likelihood(spec: str | Likelihood, noise: float | str, noise_init: float | None):
    if isinstance(spec, Likelihood):
        return spec
    if spec not in LIKELIHOODS:
        raise ValueError(f"unknown likelihood {spec!r}: choose {', '.join(LIKELIHOODS)}")
    if spec == "gaussian":
        return Gaussian(noise, noise_init)
    return LIKELIHOODS[spec]()


def _prior(spec, weights, params, scale: float, mixture) -> Prior:
    if isinstance(spec, Prior):
        return spec
    d = flat_size(weights)
    if callable(spec) and not isinstance(spec, str):
        return parameter_prior(weights, spec, params)
    if spec == "normal":
        if not scale > 0:
            raise ValueError(f"prior_scale must be positive, got {scale}")
        return NormalPrior(torch.zeros(d), normal_scales(weights, scale))
    if spec == "scale-mixture":
        return ScaleMixturePrior(d, *mixture)
    if spec == "log-uniform":
        return LogUniformPrior(normal_scales(weights, 1.0))
    if spec == "flat":
        return FlatPrior(normal_scales(weights, 1.0))
    raise ValueError(f"unknown prior {spec!r}: choose {', '.join(PRIORS)} or a callable")


# ----------------------------------------------------------------------------- after a fit


def _net_of(post) -> BayesianNet:
    model = post.model if not isinstance(post, BayesianNet) else post
    if not isinstance(model, BayesianNet):
        raise TypeError("expected the posterior of a bayesdl.bnn.bayesian network")
    return model


class PosteriorPrior:
    """``(name, param) -> N(mu_name, sigma_name^2)``: a fitted Gaussian posterior as the next
    prior (variational continual learning, Nguyen et al. 2018). Parameters it does not know
    get ``N(0, 1 / fan_in)``. ``init`` starts the next guide's means at ``mu``."""

    def __init__(self, loc: dict[str, torch.Tensor], scale: dict[str, torch.Tensor]):
        self.loc, self.scale, self.init = loc, scale, dict(loc)

    def __call__(self, name: str, param: torch.Tensor):
        if name in self.loc:
            return dist.Normal(self.loc[name], self.scale[name]).to_event(param.dim())
        fan_in = math.prod(param.shape[1:]) if param.dim() > 1 else 1
        self.init.setdefault(name, param.detach().clone())
        return dist.Normal(torch.zeros_like(param), 1 / math.sqrt(fan_in)).to_event(param.dim())


def as_prior(post) -> PosteriorPrior:
    """The fitted mean-field (or Flipout, or sparse VD) posterior ``q(theta)`` as a prior for the
    next fit: ``bayesian(net, prior=as_prior(post), ...)`` (means and sds carried exactly)."""
    bnet = _net_of(post)
    q = bnet.guide
    if not isinstance(q, MeanField | SparseVD):  # gaussian-dropout: its biases are points
        raise ValueError(
            "as_prior needs a Gaussian posterior (meanfield, flipout, sparse-vd), not "
            f"{bnet.guide_name}"
        )
    with torch.no_grad():
        loc = unflatten(bnet.weights, q.loc.detach().clone())
        sd = unflatten(bnet.weights, q.sigma().detach().clone())
    return PosteriorPrior(loc, sd)


def mean_net(post) -> nn.Module:
    """A copy of the network with its Bayesian parameters at the posterior means (sparse VD:
    pruned) and the rest at their fitted values; in eval mode."""
    bnet = _net_of(post)
    net = copy.deepcopy(bnet.net)
    if bnet.weights:
        with torch.no_grad():
            values = unflatten(bnet.weights, bnet.guide.mean().detach())
            for name, value in values.items():
                net.get_parameter(name).copy_(value).requires_grad_(True)
    return net.eval()


def sparsity(post) -> dict[str, Any] | None:
    """Per parameter and in total: weights kept by sparse VD (``log alpha < threshold``) and
    the compression ``all / kept`` (``None`` for other guides)."""
    bnet = _net_of(post)
    keep = getattr(bnet.guide, "keep", None)
    if keep is None:
        return None
    with torch.no_grad():
        kept = unflatten(bnet.weights, keep.float())
    per = {n: {"weights": v.numel(), "kept": int(v.sum())} for n, v in kept.items()}
    total, alive = sum(r["weights"] for r in per.values()), sum(r["kept"] for r in per.values())
    return {
        "per_parameter": per,
        "sparsity": 1 - alive / total,
        "compression": total / max(1, alive),
    }


def uncertainty(post, x: Any, num_samples: int = 100) -> dict[str, torch.Tensor]:
    """The predictive uncertainty at inputs ``x``, split into its sources.

    Classification: ``entropy`` ``H[E_q p(y | x, theta)]`` = ``expected_entropy`` (aleatoric,
    ``E_q H[p(y | x, theta)]``) + ``mutual_information`` (epistemic), with ``probs``.
    Regression (Gaussian): ``sd^2 = sd_noise^2 + sd_model^2`` with ``sd_noise^2 = E_q sigma^2``
    and ``sd_model^2 = Var_q mu``, and the predictive ``mean``; Poisson alike with the rate.
    """
    from bayesdl.models.uncertainty import split_uncertainty

    bnet = _net_of(post)
    f = post.predict({"x": x}, num_samples=num_samples)["f"]
    return split_uncertainty(bnet.likelihood, f, post.params.get("sigma"))
