"""The ``bnn`` model on :func:`bayesdl.bnn.bayesian`: the built-in architecture (an MLP or
LeNet-5 as plain ``torch.nn`` layers) or the user's ``--net`` network, made Bayesian with the
chosen guide, on the image data or on ``--data`` arrays.

The built-in guides (meanfield, dropout, sparse VD, MAP, MLE) are set as the layer classes
that ran them up to commit af75b74 set them (:func:`layer_settings`; their old run folders
load through :mod:`bayesdl.workflows.bnn_legacy`): only the weights of the dense and conv
layers are Bayesian (biases are point estimates, started at 0), prior ``N(0, s^2 / fan_in)``,
mean-field and sparse-VD sds started at ``exp(-5)`` (``log sigma^2 = -10``) and mean field's
learned as ``log sigma^2``, ``dropout`` is MC dropout on every layer's inputs with the flat
prior (no weight decay).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

import bayesdl.workflows.bayesian_net as anynet
from bayesdl.datasets import bundled as datasets
from bayesdl.guides.bayesian_net import LogVarianceMeanField
from bayesdl.inference.errors import UserError
from bayesdl.models.bnn_nets import MLP, lenet5
from bayesdl.workflows.base import Problem, Workflow, image_data_source

#: the guides the built-in network had on the layer classes: set here as those layers were
BUILT_IN_GUIDES = ("meanfield", "dropout", "sparse-vd", "map", "mle")
#: the layers' starting ``log sigma^2`` (meanfield, sparse VD): sd ``exp(-5)``
LAYER_LOG_SIGMA2 = -10.0
ROWS_PER_PASS = 1 << 16  # inputs x samples pushed through the network at once


def names(s: str | None) -> list[str] | None:
    """``--exclude a,b`` -> ``["a", "b"]``."""
    return [v.strip() for v in s.split(",") if v.strip()] if s else None


def hidden_widths(s: str) -> tuple[int, ...]:
    """``--hidden 300,100`` -> ``(300, 100)`` (positive widths, else a UserError)."""
    try:
        h = tuple(int(v) for v in s.split(",") if v.strip())
    except ValueError:
        raise UserError(f"--hidden takes comma-separated layer widths, got {s!r}") from None
    if not h or min(h) < 1:
        raise UserError(f"--hidden takes positive layer widths, got {s!r}")
    return h


def image_split(w: Workflow) -> datasets.Split:
    """The digits, MNIST or ``.npz`` train/test split the options name."""
    o = w.model_options
    return datasets.image_classification(image_data_source(o), o.data_dir, o.split_seed)


def built_in(w: Workflow) -> bool:
    """Whether the run is the built-in architecture with one of the layer stack's guides."""
    return not w.model_options.net and w.settings.guide in BUILT_IN_GUIDES


def layer_settings(w: Workflow, net: nn.Module) -> dict[str, Any]:
    """:func:`bayesdl.bnn.bayesian`'s settings that make ``net`` (the built-in architecture)
    the layer stack's model: biases deterministic and at 0, the layers' starting sd."""
    biases = [n for n, p in net.named_parameters() if n.endswith("bias")]
    with torch.no_grad():
        for n in biases:
            net.get_parameter(n).zero_()
    return {"exclude": biases, "init_scale": math.exp(LAYER_LOG_SIGMA2 / 2)}


def guide_name(w: Workflow) -> str:
    """:func:`bayesdl.bnn.bayesian`'s name of the run's guide: ``dropout`` is MC dropout, and
    at rate 0 the point network the layers' dropout is then (MLE)."""
    if w.settings.guide != "dropout":
        return w.settings.guide
    return "mle" if w.model_options.dropout == 0 else "mc-dropout"


def build(w: Workflow) -> Problem:
    """The network made Bayesian by :func:`bayesdl.bnn.bayesian` and its problem (checked by one
    run of guide and model on the training data)."""
    from bayesdl.bnn import bayesian

    o = w.model_options
    if o.samples < 1:
        raise UserError(f"--samples must be >= 1, got {o.samples}")
    split = net_split(w)
    with torch.random.fork_rng():  # the initial weights depend on --seed only
        torch.manual_seed(w.engine.seed)
        net = user_net(o.net) if o.net else plain_net(w, split)
    try:
        noise: float | str = o.noise if o.noise in ("learned", "predicted") else float(o.noise)
    except ValueError:
        raise UserError(f"--noise takes a number, learned or predicted, not {o.noise!r}") from None
    settings = {"exclude": names(o.exclude), "only": names(o.only)}
    prior = o.prior
    if built_in(w):
        settings = layer_settings(w, net)
        if prior is None and guide_name(w) == "mc-dropout":
            prior = "flat"  # the layers' dropout: no prior term (no weight decay)
    try:
        bnet = bayesian(
            net,
            likelihood=o.likelihood,
            prior=prior,
            guide=guide_name(w),
            noise=noise,
            prior_scale=w.prior_scale,
            dropout=o.dropout,
            prune_threshold=o.prune_threshold,
            local_reparam=o.local_reparam,
            alpha_per=o.alpha_per,
            **settings,
        )
    except (ValueError, TypeError) as e:
        raise UserError(f"bnn --net {o.net or o.arch}: {e}") from None
    if built_in(w) and w.settings.guide == "meanfield":  # sds learned as the layers learn them
        q = bnet.guide
        bnet.guide = LogVarianceMeanField(bnet.weights, q.loc, settings["init_scale"], q.local)
        bnet.guide.exact_kl = q.exact_kl
    data = {"x": split.x_train, "y": split.y_train}
    problem = anynet.build_problem(bnet, None, data, f"bnn --net {o.net or o.arch}")
    problem.extra.update(split=split, net=True, built_in=built_in(w))
    return problem


def net_split(w: Workflow) -> datasets.Split:
    """The image split, or a ``--net`` run's ``--data`` arrays (``x``, ``y``, and ``x_test``,
    ``y_test`` where given; else the reports are on the training data)."""
    o = w.model_options
    source = image_data_source(o)
    if source in ("digits", "mnist") or not o.net:
        if o.x_cols or o.y_col:
            raise UserError("--x-cols/--y-col pick columns of a .csv --data")
        return image_split(w)
    from bayesdl.workflows.user_data import read_data

    arrays = read_data(source, o.x_cols, o.y_col)
    if "x" not in arrays or "y" not in arrays:
        raise UserError(
            f"--data {source}: needs arrays x and y (an .npz) or --x-cols/--y-col (a .csv)"
        )
    x, y = arrays["x"], arrays["y"]
    if o.likelihood == "categorical":
        y = y.long()
    xt, yt = arrays.get("x_test"), arrays.get("y_test")
    if xt is None or yt is None:  # no test split given: reports are on the training data
        xt, yt = x, y
    elif o.likelihood == "categorical":
        yt = yt.long()
    k = int(max(y.max(), yt.max())) + 1 if o.likelihood == "categorical" else None
    return datasets.Split(x, y, xt, yt, None, k)


def user_net(spec: str) -> nn.Module:
    """The ``nn.Module`` that ``--net FILE.py:make_net``'s function returns."""
    from bayesdl.workflows.user_code import load_function, split_spec

    path, fn = split_spec(spec, "function")
    make = load_function(path, fn)
    try:
        net = make()
    except Exception as e:  # noqa: BLE001 - the user's code
        raise UserError(f"--net {spec}: {type(e).__name__}: {e}") from None
    if not isinstance(net, nn.Module):
        raise UserError(f"--net {spec} returned {type(net).__name__}, not an nn.Module")
    return net


def plain_net(w: Workflow, split: datasets.Split) -> nn.Module:
    """The built-in architecture as plain ``torch.nn`` layers."""
    k = split.num_classes or int(split.y_train.max()) + 1
    if w.model_options.arch == "lenet5":
        if split.x_train.shape[1] != 28 * 28:
            raise UserError("--arch lenet5 needs 28x28 images (--data mnist)")
        return lenet5(k)
    return MLP((split.x_train.shape[1], *hidden_widths(w.hidden), k))


def outputs(
    w: Workflow,
    problem: Problem,
    x: torch.Tensor,
    samples: int | None = None,
    mean_net: bool = False,
) -> torch.Tensor:
    """Network outputs ``[M, N, *out]``: ``M`` draws of ``q``, or the mean network (``M = 1``;
    sparse VD: pruned; MAP and MLE always)."""
    from bayesdl.bnn import mean_net as mean_network

    if mean_net or w.settings.guide in ("map", "mle"):
        net = mean_network(problem.model)
        dev = anynet._device(problem)
        with torch.no_grad():
            return torch.cat([net(c.to(dev)) for c in x.split(ROWS_PER_PASS)])[None]
    return anynet.network_draws(problem, x, samples or w.model_options.samples)


def sparsity(problem: Problem) -> dict[str, Any] | None:
    """Sparse VD's kept weights: per parameter (a ``--net`` run's), or per layer as the layer
    stack reports them (the built-in architecture: its weights, layer by layer)."""
    from bayesdl.bnn import sparsity as net_sparsity

    sp = net_sparsity(problem.model)
    if sp is None or not problem.extra.get("built_in"):
        return sp
    per = list(sp["per_parameter"].values())
    return {
        "per_layer": [
            {"weights": r["weights"], "kept": r["kept"], "sparsity": 1 - r["kept"] / r["weights"]}
            for r in per
        ],
        "sparsity": sp["sparsity"],
        "compression": sp["compression"],
    }


def first_mask(problem: Problem) -> torch.Tensor:
    """The first dense layer's kept weights ``[out, in]`` (sparse VD)."""
    from bayesdl.models.bayesian_net import unflatten

    bnet = problem.model
    keep = unflatten(bnet.weights, bnet.guide.keep.float())
    return keep[bnet.weights[0].name].detach()
