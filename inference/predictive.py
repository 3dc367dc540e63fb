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

from bayesdl.inference.per_draw import deterministic_per_draw, is_delta, mixed_sites, probe_size


def latent_sites(
    guide: Callable, data: Mapping[str, Any], trace: poutine.Trace | None = None
) -> dict[str, torch.Size]:
    """Names and shapes of the latent sites the guide samples (one draw; of ``trace``, a trace
    of the guide, when given)."""
    tr = trace if trace is not None else poutine.trace(guide).get_trace(**data)
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

    Vectorized (one pass under a plate of samples) where that equals one run of the guide per
    draw (checked on a few draws, :func:`~bayesdl.inference.per_draw.mixed_sites`), else
    sequential; the passes never have as many draws as a dimension of the data (see
    :func:`chunks`).
    """
    parts = []
    with torch.no_grad():
        vectorized = mixed_sites(guide, {}, data, probe_size(_sizes(data))) == set()
        for n in chunks(num_samples, num_samples, _sizes(data)):
            pred = Predictive(guide, num_samples=n, return_sites=sites, parallel=vectorized)
            try:
                parts.append(pred(**data))
            except Exception:  # noqa: BLE001 - guides that do not broadcast: one at a time
                if not vectorized:
                    raise
                parts.append(Predictive(guide, num_samples=n, return_sites=sites)(**data))
    out = _cat(parts)
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
    site of the model when ``None``), ``{site: [num_samples, *shape]}``: the guide's draws of
    its latent sites (the guide alone when only those are asked for), then the model
    conditioned on them (:func:`conditioned`). The guide's draws are the same whichever sites
    are asked for, given the random state."""
    latent = latent_sites(guide, data)
    if return_sites is not None and all(s in latent for s in return_sites):
        out = sample_posterior(guide, data, num_samples, list(return_sites))
        return _fix_shapes(out, num_samples, latent)
    samples = sample_posterior(guide, data, num_samples, list(latent)) if latent else {}
    shapes = model_sites(model, guide, data)
    sites = return_sites if return_sites is not None else list(shapes)
    try:
        samples = {k: v.reshape(num_samples, *shapes[k]) for k, v in samples.items() if k in shapes}
    except RuntimeError:  # the guide's draws change shape (a subsampled plate): Pyro's way
        samples = {}
    if not samples:  # nothing latent, or guide and model replayed together one at a time
        out = Predictive(model, guide=guide, num_samples=num_samples, return_sites=sites)(**data)
        return _fix_shapes(out, num_samples, shapes)
    return conditioned(model, samples, data, sites)


def conditioned(
    model: Callable,
    samples: Mapping[str, torch.Tensor],
    data: Mapping[str, Any],
    return_sites: list[str] | None = None,
) -> dict[str, torch.Tensor]:
    """The model's sites drawn given posterior ``samples`` (``{site: [n, *shape]}``, one model
    draw per sample; Pyro's ``Predictive(model, posterior_samples=...)``), ``{site: [n,
    *shape]}`` of ``return_sites`` (``None``: every site not in ``samples``).

    The same values as one run of the model per draw (Pyro's sequential ``Predictive``): one
    vectorized pass where a check on a few draws finds it equal
    (:func:`~bayesdl.inference.per_draw.mixed_sites`); where only point-mass sites differ
    (``pyro.deterministic("m", theta.mean())``), those are recomputed per draw
    (:func:`~bayesdl.inference.per_draw.deterministic_per_draw`); else one draw at a time."""
    n = next(iter(samples.values())).shape[0]
    with torch.no_grad(), poutine.block():
        trace = poutine.trace(poutine.condition(model, data={k: v[0] for k, v in samples.items()}))
        trace = trace.get_trace(**data)
    sites = {k: s for k, s in trace.nodes.items() if s["type"] == "sample" and not _subsample(s)}
    shapes = {k: s["value"].shape for k, s in sites.items()}
    if return_sites is None:
        wanted = [k for k in sites if k not in samples]
    else:
        wanted = list(return_sites)
    sizes = _sizes(data) | {d for shape in shapes.values() for d in shape}
    k = probe_size(sizes)
    mixed = mixed_sites(model, {s: v[torch.arange(k) % n] for s, v in samples.items()}, data, k)
    if mixed is None or any(not is_delta(sites[m]["fn"]) for m in mixed if m in sites):
        with torch.no_grad():  # the random sites themselves differ: one draw at a time
            out = Predictive(model, posterior_samples=dict(samples), return_sites=wanted)(**data)
        return _fix_shapes(out, n, shapes)
    redo = [m for m in wanted if m in mixed]  # point masses, e.g. pyro.deterministic
    drawn = [  # the random choices they may depend on, drawn in the vectorized pass
        m
        for m, s in sites.items()
        if redo and not s["is_observed"] and m not in samples and not is_delta(s["fn"])
    ]
    first = [m for m in wanted if m not in mixed]
    first += [m for m in drawn if m not in first]
    out = _vectorized(model, samples, data, first, sites, sizes) if first else {}
    if redo:
        choices = {**samples, **{m: out[m] for m in drawn}}
        most = max(1, MAX_ELEMENTS_PER_PASS // max(1, sum(s.numel() for s in shapes.values())))
        out.update(deterministic_per_draw(model, choices, data, redo, most))
    return {m: out[m] for m in wanted if m in out}


def _vectorized(
    model: Callable,
    samples: Mapping[str, torch.Tensor],
    data: Mapping[str, Any],
    return_sites: list[str],
    sites: dict[str, dict],
    sizes: set[int],
) -> dict[str, torch.Tensor]:
    """:func:`conditioned`'s vectorized passes, in chunks (one draw at a time where a chunk
    fails). Each sample is given its plate dims first (``[n, 1, ..., *batch, *event]``; Pyro's
    own reshaping mistakes an event dim of a site outside every plate, e.g. a coefficient
    vector, for a plate dim). A pass never has as many draws as a dimension of the data or of a
    site, so a model that does not broadcast fails instead of pairing draw i with datum i."""
    n = next(iter(samples.values())).shape[0]
    shapes = {k: s["value"].shape for k, s in sites.items()}
    nesting = max(
        (-f.dim for s in sites.values() for f in s["cond_indep_stack"] if f.dim is not None),
        default=0,
    )
    per_draw = max(1, sum(s.numel() for s in shapes.values()))
    parts, start = [], 0
    with torch.no_grad():
        for m in chunks(n, max(1, MAX_ELEMENTS_PER_PASS // per_draw), sizes):
            part = {k: v[start : start + m] for k, v in samples.items()}
            start += m
            try:
                padded = {k: _with_plate_dims(v, sites[k], nesting) for k, v in part.items()}
                out = Predictive(
                    model, posterior_samples=padded, return_sites=return_sites, parallel=True
                )(**data)
            except Exception:  # noqa: BLE001 - models that do not broadcast: one at a time
                out = Predictive(model, posterior_samples=part, return_sites=return_sites)(**data)
            parts.append(_fix_shapes(out, m, shapes))
    return _cat(parts)


def _with_plate_dims(v: torch.Tensor, site: dict, nesting: int) -> torch.Tensor:
    """``[n, *batch, *event]`` -> ``[n, 1, ..., 1, *batch, *event]`` with ``nesting`` dims
    between the draws and the event dims (the plates' dims)."""
    batch = len(site["fn"].batch_shape) if hasattr(site["fn"], "batch_shape") else 0
    if batch > nesting:
        raise ValueError(f"site {site['name']!r} has batch dims outside its plates")
    return v.reshape(v.shape[0], *([1] * (nesting - batch)), *v.shape[1:])


def _subsample(site: dict) -> bool:
    return type(site["fn"]).__name__ == "_Subsample"


def _sizes(data: Mapping[str, Any]) -> set[int]:
    """Every dimension of the tensors in ``data``."""
    return {d for v in data.values() if torch.is_tensor(v) for d in v.shape}


def chunks(total: int, most: int, avoid: set[int]) -> list[int]:
    """Sizes of the passes over ``total`` draws: at most ``most`` each, and none equal to a
    size in ``avoid`` (but 1), so that a plate of draws cannot broadcast by coincidence
    against a dimension of the data."""
    out, left = [], total
    while left > 0:
        m = min(most, left)
        while m > 1 and m in avoid:
            m -= 1
        out.append(m)
        left -= m
    return out


def _cat(parts: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    if len(parts) == 1:
        return parts[0]
    return {k: torch.cat([p[k] for p in parts]) for k in parts[0]}


def _fix_shapes(
    out: dict[str, torch.Tensor], n: int, shapes: Mapping[str, torch.Size]
) -> dict[str, torch.Tensor]:
    """Predictive keeps a singleton dim per plate level: ``[n, *shape]`` for each site."""
    for k, v in out.items():
        shape = shapes.get(k)
        if shape is not None and v.numel() == n * shape.numel():
            out[k] = v.reshape(n, *shape)
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
