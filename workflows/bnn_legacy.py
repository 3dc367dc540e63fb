"""Run folders of the ``bnn`` model made on its layer classes (bayesdl up to commit af75b74,
before issue 20 put every built-in guide on :func:`bayesdl.bnn.bayesian`): rebuilt as they
were, to load, evaluate and predict with the numbers that code gave; never to fit.

A loader, not a stack: a new ``fit bnn`` always runs on :func:`bayesdl.bnn.bayesian`
(:mod:`bayesdl.workflows.bnn_net`). Such a folder's ``config.json`` has no ``stack`` entry
(:attr:`~bayesdl.workflows.bnn.BNN.record_defaults` reads it as ``layers``). Its checkpoint
holds each layer's ``theta`` and ``bias`` (and ``log_sigma2`` for mean field and sparse VD;
the ``AutoNormal``'s locations and scales for sampled weights), so the network is rebuilt
with those parameter names and the forward pass the predictions of that code computed, in the
same order of random draws (the same seed gives the same numbers):

* ``point`` (MLE, MAP): ``b = x theta + bias``; MAP's ``kl`` is ``-log N(theta | 0, s^2)``;
* ``dropout``: ``b = dropout_p(x) theta + bias``, a mask per datum and input;
* ``meanfield``: ``b = x theta + bias + sqrt(x^2 sigma^2) eps``, ``eps ~ N(0, 1)``;
* ``sparse-vd``: the same with the weights of ``log alpha >= threshold`` set to 0 (eval mode);
* sampled weights: ``theta`` a Pyro latent site per layer, ``AutoNormal`` over them.
"""

from __future__ import annotations

import math
from typing import Any

import pyro
import pyro.distributions as dist
import torch
import torch.nn.functional as F
from pyro import poutine
from pyro.infer.autoguide import AutoNormal
from pyro.infer.autoguide.initialization import init_to_value
from pyro.nn import PyroSample
from pyro.nn.module import to_pyro_module_
from torch import nn

from bayesdl.inference.errors import UserError
from bayesdl.models.net_priors import LOG_ALPHA_MAX, neg_kl_log_uniform
from bayesdl.workflows.base import Problem, Workflow
from bayesdl.workflows.bnn_net import ROWS_PER_PASS, hidden_widths, image_split


def prior_std(shape: tuple[int, ...], s: float) -> float:
    """The prior's sd ``s / sqrt(fan_in)``."""
    return s / math.sqrt(math.prod(shape[1:]))


class Layer(nn.Module):
    """One dense (``shape = (out, in)``) or conv (``(out, in, kh, kw)``) layer of the layer
    classes, of ``kind`` ``point``, ``dropout``, ``meanfield`` or ``sparse-vd``."""

    def __init__(self, shape: tuple[int, ...], kind: str, prior_scale=None, p=0.0, threshold=3.0):
        super().__init__()
        self.theta = nn.Parameter(torch.zeros(shape))
        self.bias = nn.Parameter(torch.zeros(shape[0]))
        if kind in ("meanfield", "sparse-vd"):
            self.log_sigma2 = nn.Parameter(torch.zeros(shape))
        self.kind, self.prior_scale, self.p, self.threshold = kind, prior_scale, p, threshold
        self.conv = len(shape) == 4
        self.sample = True  # False: the mean network

    def op(self, x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None = None) -> torch.Tensor:
        return F.conv2d(x, w, b) if self.conv else F.linear(x, w, b)

    @property
    def log_alpha(self) -> torch.Tensor:
        """``log sigma^2 - log theta^2``, clipped to ``[-8, 8]``."""
        la = self.log_sigma2 - torch.log(self.theta**2 + 1e-8)
        return la.clamp(-LOG_ALPHA_MAX, LOG_ALPHA_MAX)

    @property
    def mask(self) -> torch.Tensor:
        """Sparse VD's kept weights: ``log alpha < threshold``."""
        return (self.log_alpha < self.threshold).to(self.theta.dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.kind == "dropout":
            return self.op(F.dropout(x, self.p, training=self.sample), self.theta, self.bias)
        if self.kind == "point":
            return self.op(x, self.theta, self.bias)
        keep = self.mask if self.kind == "sparse-vd" and not self.training else None
        theta, var = self.theta, self.log_sigma2.exp()
        if keep is not None:
            theta, var = theta * keep, var * keep
        mu = self.op(x, theta, self.bias)
        if not self.sample:
            return mu
        return mu + self.op(x * x, var).clamp_min(1e-16).sqrt() * torch.randn_like(mu)

    def kl(self) -> torch.Tensor | None:
        if self.kind == "sparse-vd":
            return -neg_kl_log_uniform(self.log_alpha).sum()
        if self.kind == "meanfield":
            s2, ls2 = self.prior_scale**2, self.log_sigma2
            return 0.5 * ((ls2.exp() + self.theta**2) / s2 - 1 - ls2 + math.log(s2)).sum()
        if self.kind == "point" and self.prior_scale is not None:
            return 0.5 * (self.theta**2).sum() / self.prior_scale**2
        return None


class Net(nn.Module):
    """The MLP (``shapes`` of dense layers) or LeNet-5 (two convs, two dense) of layers."""

    def __init__(self, shapes: list[tuple[int, ...]], make, lenet5: bool):
        super().__init__()
        self.layers = nn.ModuleList(make(s) for s in shapes)
        self.lenet5 = lenet5

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.lenet5:
            h = x.reshape(x.shape[0], 1, 28, 28)
            h = F.max_pool2d(F.relu(self.layers[0](h)), 2)
            h = F.max_pool2d(F.relu(self.layers[1](h)), 2)
            return self.layers[3](F.relu(self.layers[2](h.flatten(1))))
        h = x.reshape(x.shape[0], -1)
        for layer in self.layers[:-1]:
            h = F.relu(layer(h))
        return self.layers[-1](h)


class BNN(nn.Module):
    """``p(y, theta | x) = p(theta) prod_n Cat(y_n | softmax f_theta(x_n))``, the layers'
    closed-form KL as the site ``kl``."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        data = pyro.plate("data", x.shape[0])
        idx = data.indices
        logits = self.net(x[idx])
        with data:
            obs = None if y is None else y[idx]
            pyro.sample("y", dist.Categorical(logits=logits, validate_args=False), obs=obs)
        terms = [t for layer in self.net.layers if (t := layer.kl()) is not None]
        if terms:
            unit = dist.Unit(-sum(terms))
            pyro.sample("kl", unit, obs=unit.sample(), infer={"is_kl": True})
        return logits


def in_layers(x: torch.Tensor, y: torch.Tensor | None = None) -> None:
    """``q(theta)`` lives in the model's layers: nothing to sample here."""


def build(w: Workflow) -> Problem:
    """The old run's network, model and guide, with the parameter names of its checkpoint."""
    o, guide, s = w.model_options, w.settings.guide, w.prior_scale
    if getattr(w, "run_dir", None) is None:
        raise UserError(
            "--stack layers was removed (issue 20): bnn fits on bayesdl.bnn.bayesian; runs "
            "made on the layers load, evaluate and predict"
        )
    sampled = guide == "meanfield" and not o.local_reparam
    kind = {"dropout": "dropout", "sparse-vd": "sparse-vd", "meanfield": "meanfield"}.get(guide)
    kind = "point" if kind is None or sampled else kind
    split = image_split(w)
    k = split.num_classes or int(split.y_train.max()) + 1
    if o.arch == "lenet5":
        shapes = [(20, 1, 5, 5), (50, 20, 5, 5), (500, 800), (k, 500)]
    else:
        sizes = (split.x_train.shape[1], *hidden_widths(w.hidden), k)
        shapes = list(zip(sizes[1:], sizes[:-1], strict=True))

    def make(shape):
        scale = prior_std(shape, s) if guide in ("meanfield", "map") and not sampled else None
        return Layer(shape, kind, scale, o.dropout, o.prune_threshold)

    net = Net(shapes, make, o.arch == "lenet5")
    if sampled:  # TyXe's way: theta a latent site, N(0, s^2 / fan_in)
        to_pyro_module_(net)
        init = {}
        for i, layer in enumerate(net.layers):
            shape = tuple(layer.theta.shape)
            init[f"layers.{i}.theta"] = torch.zeros(shape)
            std = prior_std(shape, s)
            layer.theta = PyroSample(dist.Normal(0.0, std).expand(shape).to_event(len(shape)))
        model = BNN(net)
        q = AutoNormal(model, init_loc_fn=init_to_value(values=init), init_scale=math.exp(-5))
    else:
        model, q = BNN(net), in_layers
    data = {"x": split.x_train, "y": split.y_train}
    return Problem(model, q, data, data_size=len(split.y_train), extra={"split": split})


@torch.no_grad()
def probs(problem: Problem, x: torch.Tensor, m: int, mean_net: bool) -> torch.Tensor:
    """``p(y | x, theta_m)`` ``[m, N, K]``: the layers sample per row (``m`` copies of each input
    are ``m`` posterior draws), or one guide draw per pass for sampled weights."""
    net, guide = problem.model.net, problem.guide
    dev = next(iter(problem.model.parameters()), torch.empty(0)).device
    x = x.to(dev)
    net.eval()
    for layer in net.layers:
        layer.sample = not mean_net
    try:
        if isinstance(guide, AutoNormal):  # weights are latent sites: one draw per pass
            out = []
            for _ in range(m):
                q = guide.median if mean_net else guide
                tr = poutine.trace(q).get_trace(**problem.data)
                with poutine.replay(trace=tr):
                    out.append(torch.cat([net(c) for c in x.split(ROWS_PER_PASS)]).softmax(-1))
            return torch.stack(out)
        out = []
        for c in x.split(max(1, ROWS_PER_PASS // m)):
            rep = c.repeat(m, *([1] * (c.dim() - 1)))
            out.append(net(rep).softmax(-1).reshape(m, len(c), -1))
        return torch.cat(out, 1)
    finally:
        net.train()
        for layer in net.layers:
            layer.sample = True


def sparsity(problem: Problem) -> dict[str, Any] | None:
    """Per-layer and total fraction of pruned weights and the compression (sparse VD)."""
    layers = problem.model.net.layers
    if not all(layer.kind == "sparse-vd" for layer in layers):
        return None
    n = [layer.theta.numel() for layer in layers]
    kept = [int(layer.mask.sum()) for layer in layers]
    return {
        "per_layer": [
            {"weights": w, "kept": k, "sparsity": 1 - k / w} for w, k in zip(n, kept, strict=True)
        ],
        "sparsity": 1 - sum(kept) / sum(n),
        "compression": sum(n) / max(1, sum(kept)),
    }


def first_mask(problem: Problem) -> torch.Tensor:
    """The first layer's kept weights (sparse VD)."""
    return problem.model.net.layers[0].mask.detach()
