"""Is the family good enough? Pareto-smoothed importance sampling (PSIS) of a fitted guide.

Yao, Vehtari, Simpson & Gelman (2018), "Yes, but did it work?: Evaluating variational
inference": with draws ``theta_s ~ q`` (s = 1..S) and importance ratios

    log r_s = log p(theta_s, D) - log q(theta_s),

fit a generalized Pareto distribution to the largest ``M = min(S / 5, 3 sqrt S)`` ratios; its
shape ``k`` says how heavy the tail of ``p / q`` is: ``k < 0.5`` the guide is good, ``0.5 to
0.7`` usable, ``k > 0.7`` the importance weights (and the guide) are not to be trusted for
this model. The fit is Pyro's :func:`pyro.ops.stats.fit_generalized_pareto` (Zhang and
Stephens 2009 with the prior of Vehtari et al.), on the tail chosen as
:func:`pyro.infer.importance.psis_diagnostic` chooses it; the smoothed weights replace the
tail ratios by the fitted distribution's expected order statistics, truncated at the largest
raw ratio (Vehtari, Simpson, Gelman, Yao & Gabry 2024, JMLR 25(72)), which is ArviZ's
``psislw``; ArviZ is an extra, so the dozen lines of smoothing live here, over Pyro's fit.

:func:`importance_draws` evaluates the joint on the **full data**: every subsampled plate of
the model and the guide is given all its indices (the likelihood then has scale 1), so a
minibatched fit is judged by the posterior it targets. The S draws are one vectorised pass
(Pyro's :func:`~pyro.infer.importance.vectorized_importance_weights`, a plate of particles)
checked against the model run one draw at a time on three of them; a model that does not
broadcast (``x[idx]`` on a latent, ``theta.mean()``) is then run one draw at a time.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import pyro
import torch
from pyro import poutine
from pyro.infer.autoguide import AutoGuide
from pyro.infer.importance import vectorized_importance_weights
from pyro.infer.util import plate_log_prob_sum
from pyro.ops.stats import fit_generalized_pareto
from pyro.poutine.subsample_messenger import SubsampleMessenger

#: draws of the guide for k-hat
DRAWS = 1000
#: k-hat below this: the guide is good; up to K_LIMIT usable; above: unreliable
K_GOOD, K_LIMIT = 0.5, 0.7
#: the most tensor elements of one vectorised pass (particles x the model's values)
MAX_ELEMENTS = 20_000_000
#: draws the vectorised pass is checked on, one at a time
CHECKED_DRAWS = 3


@contextmanager
def full_plates(seen: dict[str, int] | None = None):
    """Every ``pyro.plate(name, N, subsample_size=B)`` entered meanwhile takes all ``N``
    indices (scale 1): the joint on the full data. Pyro's plate checks a supplied subsample
    against the ``subsample_size`` it was declared with before any handler sees it, so its
    helper :meth:`SubsampleMessenger._subsample` is wrapped for the duration."""
    original = SubsampleMessenger.__dict__["_subsample"]

    def _subsample(
        name, size=None, subsample_size=None, subsample=None, use_cuda=None, device=None
    ):
        if size is not None and subsample is None and subsample_size not in (None, size):
            where = device if device is not None else ("cuda" if use_cuda else None)
            subsample, subsample_size = torch.arange(size, device=where), size
            if seen is not None:
                seen[name] = int(size)
        return original.__func__(name, size, subsample_size, subsample, use_cuda, device)

    SubsampleMessenger._subsample = staticmethod(_subsample)
    try:
        yield
    finally:
        SubsampleMessenger._subsample = original


@dataclass
class ImportanceDraws:
    """Draws of the guide and their log importance ratios ``log p(theta, D) - log q(theta)``."""

    log_ratios: torch.Tensor  # [S], float64
    draws: dict[str, torch.Tensor]  # the model's latent sites, [S, *shape]
    how: str  # "vectorised" or "one draw at a time"
    seconds: float
    full_plates: dict[str, int] = field(default_factory=dict)  # plates given all their rows


def _latent(trace) -> dict[str, dict]:
    return {
        n: s
        for n, s in trace.nodes.items()
        if s["type"] == "sample" and not s["is_observed"] and type(s["fn"]).__name__ != "_Subsample"
    }


def _nesting(trace) -> int:
    frames = (f.dim for s in trace.nodes.values() for f in s.get("cond_indep_stack", ()))
    return max((-d for d in frames if d is not None), default=0)


def _one(model: Callable, guide: Callable, data: Mapping[str, Any]):
    """One draw: the guide's trace and the model replayed on it (Pyro's ``Importance``)."""
    guide_tr = poutine.trace(guide).get_trace(**data)
    model_tr = poutine.trace(poutine.replay(model, trace=guide_tr)).get_trace(**data)
    return guide_tr, model_tr


def _sequential(model, guide, data, n: int, shapes: dict) -> tuple[torch.Tensor, dict]:
    log_r, draws = [], {k: [] for k in shapes}
    for _ in range(n):
        guide_tr, model_tr = _one(model, guide, data)
        log_r.append(float(model_tr.log_prob_sum()) - float(guide_tr.log_prob_sum()))
        for k in shapes:
            draws[k].append(model_tr.nodes[k]["value"].detach())
    stacked = {k: torch.stack(v) for k, v in draws.items()}
    return torch.tensor(log_r, dtype=torch.float64), stacked


def _particle_values(trace, shapes: dict, n: int, nesting: int) -> dict[str, torch.Tensor]:
    """The values of the sites ``shapes`` in a trace run under a plate of ``n`` particles at
    dim ``-(nesting + 1)``, as ``[n, *shape]``."""
    draws = {}
    for k, shape in shapes.items():
        site = trace.nodes[k]
        v = site["value"]
        axis = v.dim() - site["fn"].event_dim - (nesting + 1)
        if axis < 0 or v.shape[axis] != n:
            raise ValueError(f"site {k!r} has no dim of draws")
        v = v.movedim(axis, 0)
        if v[0].numel() != shape.numel():
            raise ValueError(f"site {k!r} has shape {tuple(v.shape[1:])}, not {tuple(shape)}")
        draws[k] = v.reshape(n, *shape)
    return draws


def _log_p(model, data, given: dict[str, torch.Tensor]) -> float:
    """``log p(theta, D)`` of one draw: the model run with its latent sites set to ``given``."""
    return float(
        poutine.trace(poutine.condition(model, data=given)).get_trace(**data).log_prob_sum()
    )


def _vectorised(model, guide, data, n: int, shapes: dict, nesting: int, auto: bool):
    """``n`` draws in one pass under a plate of particles at dim ``-(nesting + 1)``; checked
    against the model (and a guide function) run one draw at a time on a few of them."""
    log_w, model_tr, guide_tr = vectorized_importance_weights(
        model, guide, num_samples=n, max_plate_nesting=nesting, **data
    )
    log_p = plate_log_prob_sum(model_tr, guide_tr.plate_to_symbol["num_particles_vectorized"])
    draws = _particle_values(model_tr, shapes, n, nesting)
    for i in range(min(CHECKED_DRAWS, n)):
        given = {k: v[i] for k, v in draws.items()}
        if not _close(_log_p(model, data, given), float(log_p[i])):
            raise ValueError("the model does not broadcast over a plate of draws")
        if not auto:  # a guide function samples the sites themselves (an autoguide: aux sites)
            q = poutine.trace(poutine.condition(guide, data=given)).get_trace(**data)
            if not _close(float(q.log_prob_sum()), float(log_p[i] - log_w[i])):
                raise ValueError("the guide does not broadcast over a plate of draws")
    return log_w.detach().double(), draws


def _guide_vectorised(model, guide, data, n: int, shapes: dict, nesting: int):
    """An autoguide's ``n`` draws and ``log q`` in one pass; the model one draw at a time."""
    with pyro.plate("num_particles_vectorized", n, dim=-(nesting + 1)):
        guide_tr = poutine.trace(guide).get_trace(**data)
    guide_tr.compute_log_prob()
    log_q = torch.zeros(n, dtype=torch.float64)
    for site in guide_tr.nodes.values():
        if site["type"] != "sample" or "log_prob" not in site:
            continue
        lp = site["log_prob"]
        axis = lp.dim() - (nesting + 1)
        if axis < 0 or lp.shape[axis] != n:
            raise ValueError(f"guide site {site['name']!r} has no dim of draws")
        log_q += lp.movedim(axis, 0).reshape(n, -1).sum(1).double()
    draws = _particle_values(guide_tr, shapes, n, nesting)
    log_p = [_log_p(model, data, {k: v[i] for k, v in draws.items()}) for i in range(n)]
    return torch.tensor(log_p, dtype=torch.float64) - log_q, draws


def _close(a: float, b: float) -> bool:
    return math.isfinite(a) and math.isfinite(b) and abs(a - b) <= 1e-3 * (1 + abs(a))


@torch.no_grad()
def importance_draws(
    model: Callable, guide: Callable, data: Mapping[str, Any], num_draws: int = DRAWS
) -> ImportanceDraws:
    """``num_draws`` draws of ``guide`` and their log importance ratios against ``model``'s
    joint on the full data (run inside the fit's param store, without Pyro's argument
    checks, as the fit's steps run)."""
    seen: dict[str, int] = {}
    with pyro.validation_enabled(False), full_plates(seen):
        out = _importance_draws(model, guide, data, num_draws)
    out.full_plates = seen
    return out


def _importance_draws(model, guide, data, num_draws: int) -> ImportanceDraws:
    auto = isinstance(guide, AutoGuide)
    t0 = time.perf_counter()
    guide_tr, model_tr = _one(model, guide, data)
    shapes = {k: s["value"].shape for k, s in _latent(model_tr).items()}
    nesting = max(_nesting(model_tr), _nesting(guide_tr))
    per_draw = max(
        1,
        sum(s["value"].numel() for s in model_tr.nodes.values() if torch.is_tensor(s.get("value"))),
    )
    most = max(1, MAX_ELEMENTS // per_draw)
    parts, how = [], "vectorised"
    try:
        left = num_draws
        while left > 0:
            m = min(most, left)
            parts.append(_vectorised(model, guide, data, m, shapes, nesting, auto))
            left -= m
    except Exception:  # noqa: BLE001 - a model that does not broadcast
        parts, how = [], "the guide vectorised, the model one draw at a time"
        try:
            if not auto:
                raise ValueError("a guide function: one draw at a time")
            parts.append(_guide_vectorised(model, guide, data, num_draws, shapes, nesting))
        except Exception:  # noqa: BLE001
            parts, how = [_sequential(model, guide, data, num_draws, shapes)], "one draw at a time"
    log_r = torch.cat([p[0].cpu() for p in parts])
    draws = {k: torch.cat([p[1][k].cpu() for p in parts]) for k in shapes}
    return ImportanceDraws(log_r, draws, how, time.perf_counter() - t0)


def _tail(log_r: torch.Tensor) -> tuple[torch.Tensor, float]:
    """The tail's positions (of ``log_r`` shifted to max 0) and its cutoff, as
    :func:`pyro.infer.importance.psis_diagnostic` picks them."""
    s = len(log_r)
    cutoff_index = -math.ceil(min(0.2 * s, 3.0 * math.sqrt(s))) - 1
    cutoff = max(math.log(1.0e-15), float(torch.sort(log_r)[0][cutoff_index]))
    return torch.nonzero(log_r > cutoff).reshape(-1), cutoff


def psis(log_ratios: torch.Tensor) -> tuple[torch.Tensor, float]:
    """Pareto-smoothed log weights (normalised: they log-sum-exp to 0) and k-hat."""
    lw = log_ratios.double() - log_ratios.double().max()
    if len(lw) and float(lw.min()) > -1e-9:  # equal ratios: q is p up to a constant
        return lw - torch.logsumexp(lw, 0), -math.inf
    finite = torch.isfinite(lw)
    if not bool(finite.all()) or len(lw) < 10:
        return lw - torch.logsumexp(lw, 0), math.inf
    idx, cutoff = _tail(lw)
    m = len(idx)
    if m < 10:  # too few tail draws to fit (Pyro warns and returns inf)
        return lw - torch.logsumexp(lw, 0), math.inf
    order = idx[torch.argsort(lw[idx])]
    k, sigma = fit_generalized_pareto(lw[order].exp() - math.exp(cutoff))
    if math.isfinite(k) and sigma > 0:
        p = (torch.arange(m, dtype=torch.float64) + 0.5) / m
        if abs(k) < 1e-12:
            q = -torch.log1p(-p)
        else:
            q = torch.expm1(-k * torch.log1p(-p)) / k
        smoothed = torch.log(sigma * q + math.exp(cutoff)).clamp(max=0.0)
        lw = lw.clone()
        lw[order] = smoothed
    return lw - torch.logsumexp(lw, 0), float(k)


def pareto_k(log_ratios: torch.Tensor) -> float:
    """k-hat of the importance ratios (:func:`psis`)."""
    return psis(log_ratios)[1]


def k_verdict(k: float) -> str:
    """``good`` (k < 0.5), ``ok`` (up to 0.7), ``bad`` (Yao et al.'s thresholds)."""
    if not math.isfinite(k) or k > K_LIMIT:
        return "bad"
    return "good" if k < K_GOOD else "ok"


def weighted_stats(
    draws: Mapping[str, torch.Tensor], log_weights: torch.Tensor, quantiles=(0.05, 0.5, 0.95)
) -> dict[str, dict[str, torch.Tensor]]:
    """Self-normalised importance estimates of each site's mean, sd and ``quantiles`` (per
    element) under ``exp(log_weights)``: ``E_p[f] ~= sum_s w_s f(theta_s)``."""
    w = log_weights.double().exp()
    w = w / w.sum()
    out = {}
    for name, d in draws.items():
        x = d.double().reshape(len(d), -1)
        mean = (w[:, None] * x).sum(0)
        var = (w[:, None] * (x - mean) ** 2).sum(0)
        order = torch.argsort(x, dim=0)
        cw = torch.cumsum(w[order], dim=0)
        qs = []
        for p in quantiles:
            pos = torch.searchsorted(cw.T.contiguous(), torch.full((x.shape[1], 1), p).double())
            pos = pos.clamp(max=len(x) - 1).reshape(-1)
            qs.append(torch.gather(x, 0, order[pos, torch.arange(x.shape[1])][None])[0])
        shape = d.shape[1:]
        row = {"mean": mean.reshape(shape), "std": var.sqrt().reshape(shape)}
        for p, v in zip(quantiles, qs, strict=True):
            row[f"{round(100 * p):d}%"] = v.reshape(shape)
        out[name] = row
    return out


def effective_draws(log_weights: torch.Tensor) -> float:
    """``1 / sum w_s^2`` of the normalised weights (Kish's effective sample size)."""
    w = (log_weights.double() - torch.logsumexp(log_weights.double(), 0)).exp()
    return float(1.0 / (w**2).sum())
