"""One run of the model per posterior draw, or a vectorised pass checked to equal it.

Draws ``z_1..z_M`` of the posterior give the model's other sites by ``x_m ~ p(x | z_m)``: Pyro's
sequential ``Predictive`` runs the model once per draw, the reference. A vectorised pass runs it
once under a plate of the M draws (``Predictive(..., parallel=True)``), which is the same only
where every value of the model broadcasts over that plate. A model that reduces over a batch
(``theta.mean()``, ``.sum()``, ``.max()``, ``torch.cat``, ``theta[0]``, ``len(theta)``) mixes
the draws: ``pyro.deterministic("m", theta.mean())`` then averages over the draws too, and its
posterior sd comes out exactly 0.

:func:`mixed_sites` finds those sites on a few draws: it runs the model once per draw, then one
vectorised pass of the same draws with every random choice of those runs fixed, and compares
site by site (the values of ``Delta`` sites such as ``pyro.deterministic``, the log-density of
the others). :func:`deterministic_per_draw` then recomputes such sites exactly per draw, by
``torch.func.vmap`` over the draws (exact per draw by construction; it refuses random choices,
data-dependent control flow and ``.item()``) or, where vmap refuses, one run per draw.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Mapping
from typing import Any

import pyro
import pyro.distributions as dist
import torch
from pyro import poutine
from pyro.infer import Predictive

#: the name Pyro's ``Predictive`` gives its plate of draws
DRAWS_PLATE = "_num_predictive_samples"
#: agreement of a vectorised pass with one run per draw (float32 rounding of batched ops)
RTOL, ATOL = 1e-4, 1e-5


def probe_size(avoid: set[int]) -> int:
    """The number of draws :func:`mixed_sites` compares: 2, or the next size that is no
    dimension of the data (a plate of draws must not broadcast against a data dim by chance)."""
    k = 2
    while k in avoid:
        k += 1
    return k


def is_delta(fn: Any) -> bool:
    """Whether a site's distribution is a point mass (``pyro.deterministic``, an autoguide's
    constrained value): compared by value, not by log-density."""
    while not isinstance(fn, dist.Delta) and hasattr(fn, "base_dist"):
        fn = fn.base_dist
    return isinstance(fn, dist.Delta)


def mixed_sites(
    fn: Callable, fixed: Mapping[str, torch.Tensor], data: Mapping[str, Any], k: int
) -> frozenset[str] | None:
    """The sample sites of ``fn`` whose vectorised values differ from one run per draw.

    ``fixed``: ``{site: [k, *shape]}`` conditioned in run ``i`` to ``fixed[site][i]`` (the
    posterior draws; empty for a guide). Run ``i`` draws the other sites; the vectorised pass
    (a plate of ``k`` draws left of the model's plates) is conditioned on all of them, so both
    compute the same numbers when the model broadcasts: the value of each point-mass site and
    the log-density of each other site, to :data:`RTOL`. ``None``: the vectorised pass failed
    (a model that does not broadcast at all).

    The verdict is kept per ``fn`` and shapes of the arguments (once per posterior, not per
    call), and finding it leaves the random state as it was: draws made after it are the same
    whether it was found now or before.
    """
    key = _signature(fixed, data, k)
    try:
        verdicts = _VERDICTS.setdefault(fn, {})
    except TypeError:  # not weakly referable: no memory
        verdicts = {}
    if key not in verdicts:
        devices = sorted(
            {v.device.index or 0 for v in (*fixed.values(), *data.values()) if _on_cuda(v)}
        )
        with torch.random.fork_rng(devices=devices):
            found = _compare(fn, fixed, data, k)
        verdicts[key] = None if found is None else frozenset(found)
    return verdicts[key]


#: :func:`mixed_sites`' verdicts, per model or guide and shapes of its arguments
_VERDICTS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _on_cuda(v: Any) -> bool:
    return torch.is_tensor(v) and v.is_cuda


def _signature(fixed: Mapping[str, torch.Tensor], data: Mapping[str, Any], k: int) -> tuple:
    """What the verdict may depend on: the draws' and tensors' shapes, the other values."""

    def sig(v: Any) -> Any:
        if torch.is_tensor(v):
            return ("tensor", tuple(v.shape), v.dtype, v.device.type)
        return v if v is None or isinstance(v, bool | int | float | str) else type(v).__name__

    shapes = tuple(sorted((n, tuple(v.shape[1:]), v.dtype) for n, v in fixed.items()))
    return (k, shapes, tuple(sorted((n, sig(v)) for n, v in data.items())))


def _compare(
    fn: Callable, fixed: Mapping[str, torch.Tensor], data: Mapping[str, Any], k: int
) -> set[str] | None:
    """:func:`mixed_sites` itself."""
    with torch.no_grad(), poutine.block():
        first = poutine.trace(poutine.condition(fn, _row(fixed, 0))).get_trace(**data)
        nesting = plate_nesting(first)
        fixed_idx = {n: s["value"] for n, s in first.nodes.items() if _subsample(s)}
        runs = [first] + [
            poutine.trace(poutine.condition(fn, {**_row(fixed, i), **fixed_idx})).get_trace(**data)
            for i in range(1, k)
        ]
        sites = {
            n: s for n, s in first.nodes.items() if s["type"] == "sample" and not _subsample(s)
        }
        try:
            drawn = {
                n: _pad(torch.stack([r.nodes[n]["value"] for r in runs]), s, nesting)
                for n, s in sites.items()
                if n in fixed or (not s["is_observed"] and not is_delta(s["fn"]))
            }
            plate = pyro.plate(DRAWS_PLATE, k, dim=-nesting - 1)
            vec = poutine.trace(poutine.condition(plate(fn), {**drawn, **fixed_idx}))
            vec = vec.get_trace(**data)
        except Exception:  # noqa: BLE001 - the model does not broadcast over draws at all
            return None
        bad = set()
        for name, site in sites.items():
            other = vec.nodes.get(name)
            try:
                if is_delta(site["fn"]):
                    same = _same([r.nodes[name]["value"] for r in runs], other["value"])
                else:
                    seq = [r.nodes[name]["fn"].log_prob(r.nodes[name]["value"]) for r in runs]
                    same = _same(seq, other["fn"].log_prob(other["value"]))
            except Exception:  # noqa: BLE001 - missing in the vectorised pass, shapes differ
                same = False
            if not same:
                bad.add(name)
    return bad


def deterministic_per_draw(
    model: Callable,
    samples: Mapping[str, torch.Tensor],
    data: Mapping[str, Any],
    sites: list[str],
    chunk_size: int | None = None,
) -> dict[str, torch.Tensor]:
    """``{site: [n, *shape]}`` of the model's point-mass ``sites`` (``pyro.deterministic``)
    given ``samples`` of *every* random choice ``{site: [n, *shape]}``, computed per draw:
    ``torch.func.vmap`` over the draws where it runs, else Pyro's sequential ``Predictive``."""

    def one(z: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        tr = poutine.trace(poutine.condition(model, z)).get_trace(**data)
        return {n: tr.nodes[n]["value"] for n in sites}

    with torch.no_grad(), poutine.block():
        try:
            with pyro.validation_enabled(False):  # its checks branch on values: not under vmap
                return torch.func.vmap(one, chunk_size=chunk_size)(dict(samples))
        except Exception:  # noqa: BLE001 - randomness, .item(), value-dependent branches
            pass
        out = Predictive(model, posterior_samples=dict(samples), return_sites=sites)(**data)
    return {n: out[n] for n in sites}


def plate_nesting(trace: poutine.Trace) -> int:
    """How many plate dims the trace's sites use (the draws go left of them)."""
    return max(
        (
            -f.dim
            for s in trace.nodes.values()
            if s["type"] == "sample"
            for f in s["cond_indep_stack"]
            if f.dim is not None
        ),
        default=0,
    )


def _row(samples: Mapping[str, torch.Tensor], i: int) -> dict[str, torch.Tensor]:
    return {k: v[i] for k, v in samples.items()}


def _subsample(site: dict) -> bool:
    return site["type"] == "sample" and type(site["fn"]).__name__ == "_Subsample"


def _pad(v: torch.Tensor, site: dict, nesting: int) -> torch.Tensor:
    """``[k, *batch, *event]`` -> ``[k, 1, ..., 1, *batch, *event]``: ``nesting`` dims between
    the draws and the event dims."""
    batch = len(getattr(site["fn"], "batch_shape", ()))
    return v.reshape(v.shape[0], *([1] * max(0, nesting - batch)), *v.shape[1:])


def _same(seq: list[torch.Tensor], vec: torch.Tensor) -> bool:
    """Whether the vectorised ``vec`` holds the per-draw values ``seq`` (``[k, 1.., *shape]``,
    or ``[*shape]`` for a value that depends on no draw)."""
    a = torch.stack([torch.as_tensor(s) for s in seq]).double()
    n = a[0].numel()
    vec = torch.as_tensor(vec).double()
    if vec.numel() == a.numel():
        b = vec.reshape(a.shape)
    elif vec.numel() == n:
        b = vec.reshape(a.shape[1:]).expand_as(a)
    else:
        return False
    return torch.allclose(a, b, rtol=RTOL, atol=ATOL, equal_nan=True)
