"""Posterior and posterior predictive by Monte Carlo, over :class:`pyro.infer.Predictive`.

``q(y | x, D) ~= 1/M sum_m p(y | x, theta_m)``, ``theta_m ~ q(theta)``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import torch
from pyro import poutine
from pyro.infer import Predictive


def latent_sites(guide: Callable, data: Mapping[str, Any]) -> dict[str, torch.Size]:
    """Names and shapes of the latent sites the guide samples (one draw)."""
    tr = poutine.trace(guide).get_trace(**data)
    return {
        name: site["value"].shape
        for name, site in tr.nodes.items()
        if site["type"] == "sample"
        and not site["is_observed"]
        and type(site["fn"]).__name__ != "_Subsample"
        and not site["infer"].get("is_auxiliary")  # autoguides' internal (unconstrained) sites
    }


def sample_posterior(
    guide: Callable,
    data: Mapping[str, Any],
    num_samples: int = 1000,
    sites: list[str] | None = None,
) -> dict[str, torch.Tensor]:
    """``num_samples`` draws of the guide's latent sites, stacked on dim 0.

    Vectorized (one pass under a plate of samples) where the guide allows, else sequential.
    """
    with torch.no_grad():
        try:
            pred = Predictive(guide, num_samples=num_samples, return_sites=sites, parallel=True)
            out = pred(**data)
        except Exception:  # noqa: BLE001 - guides that do not broadcast: draw one at a time
            pred = Predictive(guide, num_samples=num_samples, return_sites=sites)
            out = pred(**data)
    return {k: v for k, v in out.items() if sites is None or k in sites}


def posterior_summary(
    guide: Callable,
    data: Mapping[str, Any],
    num_samples: int = 1000,
    max_elements: int = 100,
    model: Callable | None = None,
) -> dict[str, dict[str, Any]]:
    """Mean and standard deviation of every latent site with at most ``max_elements`` (and,
    given the ``model``, of its ``pyro.deterministic`` sites of that size)."""
    small = [n for n, shape in latent_sites(guide, data).items() if shape.numel() <= max_elements]
    deterministic = []
    if model is not None:
        with torch.no_grad():
            gtr = poutine.trace(guide).get_trace(**data)
            mtr = poutine.trace(poutine.replay(model, trace=gtr)).get_trace(**data)
        deterministic = [
            n
            for n, s in mtr.nodes.items()
            if s["type"] == "sample"
            and s["infer"].get("_deterministic")
            and s["value"].numel() <= max_elements
        ]
    if not small and not deterministic:
        return {}
    if deterministic:  # runs the model too (in chunks on big data)
        draws = draw(model, guide, data, num_samples, small + deterministic)
    else:  # the guide alone: cheap whatever the size of the data
        draws = sample_posterior(guide, data, num_samples, small)
    return mean_std({name: draws[name] for name in small + deterministic if name in draws})


def mean_std(draws: dict[str, torch.Tensor]) -> dict[str, dict[str, Any]]:
    """``{"mean", "std"}`` over dim 0 of each stack of draws, as JSON-ready lists."""
    summary = {}
    for name, d in draws.items():
        v = d.float().reshape(d.shape[0], *latent_sites_shape(d))
        summary[name] = {"mean": _tolist(v.mean(0)), "std": _tolist(v.std(0))}
    return summary


def latent_sites_shape(v: torch.Tensor) -> tuple[int, ...]:
    """Shape of one draw of a stacked sample (squeezing Predictive's singleton dims)."""
    shape = list(v.shape[1:])
    while shape and shape[0] == 1:
        shape.pop(0)
    return tuple(shape)


def predictive(
    model: Callable,
    guide: Callable,
    data: Mapping[str, Any],
    num_samples: int = 100,
    return_sites: list[str] | None = None,
    parallel: bool = True,
) -> dict[str, torch.Tensor]:
    """Posterior predictive samples of ``return_sites`` (observed ones by default)."""
    with torch.no_grad():
        return Predictive(
            model,
            guide=guide,
            num_samples=num_samples,
            return_sites=return_sites,
            parallel=parallel,
        )(**data)


def _tolist(t: torch.Tensor):
    return t.item() if t.dim() == 0 else t.tolist()


#: the most tensor elements one vectorized pass of :func:`draw` may create
MAX_ELEMENTS_PER_PASS = 20_000_000


def model_sites(model: Callable, guide: Callable, data: Mapping[str, Any]) -> dict[str, Any]:
    """Every sample site of the model (latent, observed, deterministic) and the shape of one
    draw of it, in order; not the internal KL terms (sites marked ``is_kl``, an ELBO term and
    no quantity of the model)."""
    with torch.no_grad():
        gtr = poutine.trace(guide).get_trace(**data)
        mtr = poutine.trace(poutine.replay(model, trace=gtr)).get_trace(**data)
    return {
        n: s["value"].shape
        for n, s in mtr.nodes.items()
        if s["type"] == "sample"
        and type(s["fn"]).__name__ != "_Subsample"
        and not s["infer"].get("is_kl", False)
    }


def draw(
    model: Callable,
    guide: Callable,
    data: Mapping[str, Any],
    num_samples: int,
    return_sites: list[str] | None = None,
) -> dict[str, torch.Tensor]:
    """``num_samples`` joint draws ``z_m ~ q``, ``x_m ~ p(x | z_m)`` of ``return_sites`` (every
    site of the model when ``None``), ``{site: [num_samples, *shape]}``: one vectorized pass
    where the model broadcasts, else one draw at a time."""
    shapes = model_sites(model, guide, data)
    sites = return_sites if return_sites is not None else list(shapes)
    # memory stays bounded on big data: a vectorized pass holds chunk x (every site's size)
    per_draw = max(1, sum(s.numel() for s in shapes.values()))
    chunk = max(1, min(num_samples, MAX_ELEMENTS_PER_PASS // per_draw))
    parts = []
    with torch.no_grad():
        for start in range(0, num_samples, chunk):
            n = min(chunk, num_samples - start)
            try:
                pred = Predictive(
                    model, guide=guide, num_samples=n, return_sites=sites, parallel=True
                )
                parts.append(pred(**data))
            except Exception:  # noqa: BLE001 - models that do not broadcast: one at a time
                pred = Predictive(model, guide=guide, num_samples=n, return_sites=sites)
                parts.append(pred(**data))
    out = {k: torch.cat([p[k] for p in parts]) if len(parts) > 1 else parts[0][k] for k in parts[0]}
    for k, v in out.items():  # Predictive keeps a singleton dim per plate level: drop them
        shape = shapes.get(k)
        if shape is not None and v.numel() == num_samples * shape.numel():
            out[k] = v.reshape(num_samples, *shape)
    return out


def observation_keys(model: Callable, data: Mapping[str, Any]) -> set[str]:
    """The keyword arguments the model observes: those equal to the value of an observed site
    (``obs=y``, or ``obs=y[idx]`` with the plate's full index)."""
    with torch.no_grad():
        tr = poutine.trace(model).get_trace(**data)
    observed = [
        s["value"]
        for s in tr.nodes.values()
        if s["type"] == "sample" and s["is_observed"] and torch.is_tensor(s["value"])
    ]
    return {
        k
        for k, v in data.items()
        if torch.is_tensor(v)
        and any(o.shape == v.shape and o.dtype == v.dtype and torch.equal(o, v) for o in observed)
    }


def predictive_inputs(
    train: Mapping[str, Any], new: Mapping[str, Any], observed: set[str] = frozenset()
) -> dict[str, Any]:
    """The model's keyword arguments at new inputs: ``new`` over the training ones, where an
    observation the model was fitted to (``observed``) that ``new`` does not give is ``None``,
    so its site is drawn; every other training argument keeps its value."""
    device = next((v.device for v in train.values() if torch.is_tensor(v)), None)
    out: dict[str, Any] = {k: None if k in observed else v for k, v in train.items()}
    for k, v in new.items():
        if isinstance(v, np.ndarray):
            v = torch.as_tensor(
                v.astype(np.int64) if v.dtype.kind in "iu" else v,
                dtype=None if v.dtype.kind in "iub" else torch.get_default_dtype(),
            )
        out[k] = v.to(device) if torch.is_tensor(v) and device is not None else v
    return out
