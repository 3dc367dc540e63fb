"""The ``bnn`` model on the layer classes of :mod:`bayesdl.models.bnn` (``--stack layers``):
the built-in MLP or LeNet-5 whose layers hold ``q(theta)`` themselves (mean field with local
reparameterization, dropout, sparse VD, MAP, MLE), or with ``--no-local-reparam`` the weights
as Pyro latent sites with an ``AutoNormal`` guide. Run folders made before the built-in network
moved to :func:`bayesdl.bnn.bayesian` (commit af75b74) load on this stack.
"""

from __future__ import annotations

from typing import Any

import torch
from pyro import poutine
from pyro.infer.autoguide import AutoNormal

import bayesdl.guides.bnn as bnn_guides
import bayesdl.models.bnn as bnn
from bayesdl.inference.errors import UserError
from bayesdl.workflows.base import Problem, Workflow
from bayesdl.workflows.bnn_net import ROWS_PER_PASS, hidden_widths, image_split


def layer(w: Workflow):
    """The layer factory ``shape -> layer`` of the run's guide."""
    o, guide, s = w.model_options, w.settings.guide, w.prior_scale
    if guide == "meanfield" and o.local_reparam:
        return lambda shape: bnn.MeanField(shape, bnn.prior_std(shape, s))
    if guide == "dropout":
        return lambda shape: bnn.Dropout(shape, o.dropout)
    if guide == "sparse-vd":
        return lambda shape: bnn.SparseVD(shape, o.prune_threshold)
    if guide == "map":
        return lambda shape: bnn.Deterministic(shape, bnn.prior_std(shape, s))
    return lambda shape: bnn.Deterministic(shape)  # mle; meanfield without local reparam


def build(w: Workflow) -> Problem:
    """The layer network, its model ``BNN`` and the guide (nothing to sample, or
    ``AutoNormal`` over the weight sites)."""
    o = w.model_options
    split = image_split(w)
    k = split.num_classes or int(split.y_train.max()) + 1
    with torch.random.fork_rng():  # the initial weights depend on --seed only
        torch.manual_seed(w.engine.seed)
        if o.arch == "lenet5":
            if split.x_train.shape[1] != 28 * 28:
                raise UserError("--arch lenet5 needs 28x28 images (--data mnist)")
            net = bnn.LeNet5(k, layer(w))
        else:
            net = bnn.MLP(split.x_train.shape[1], hidden_widths(w.hidden), k, layer(w))
    if w.settings.guide == "meanfield" and not o.local_reparam:
        init = {f"layers.{i}.theta": lay.theta.detach().clone() for i, lay in enumerate(net.layers)}
        model = bnn.BNN(bnn.bayesian_(net, w.prior_scale))
        guide = bnn_guides.mean_field(model, init)
    else:
        model, guide = bnn.BNN(net), bnn_guides.in_layers
    data = {"x": split.x_train, "y": split.y_train}
    return Problem(model, guide, data, data_size=len(split.y_train), extra={"split": split})


@torch.no_grad()
def probs(w: Workflow, problem: Problem, x: torch.Tensor, m: int, mean_net: bool) -> torch.Tensor:
    """``p(y | x, theta_m)`` ``[m, N, K]``: the layers sample per row (``m`` copies of each input
    are ``m`` posterior draws), or one guide draw per pass for sampled weights."""
    net, guide = problem.model.net, problem.guide
    dev = next(iter(problem.model.parameters()), torch.empty(0)).device
    x = x.to(dev)
    net.eval()
    for lay in net.layers:
        lay.sample = not mean_net
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
        for lay in net.layers:
            lay.sample = True


def sparsity(problem: Problem) -> dict[str, Any] | None:
    """Per-layer and total fraction of pruned weights and the compression ratio (sparse VD)."""
    layers = problem.model.net.layers
    if not all(isinstance(lay, bnn.SparseVD) for lay in layers):
        return None
    n = [lay.theta.numel() for lay in layers]
    kept = [int(lay.mask.sum()) for lay in layers]
    return {
        "per_layer": [
            {"weights": w, "kept": k, "sparsity": 1 - k / w} for w, k in zip(n, kept, strict=True)
        ],
        "sparsity": 1 - sum(kept) / sum(n),
        "compression": sum(n) / max(1, sum(kept)),
    }


def first_mask(problem: Problem) -> torch.Tensor:
    """The first layer's kept weights ``[out, in]`` (sparse VD)."""
    return problem.model.net.layers[0].mask.detach()
