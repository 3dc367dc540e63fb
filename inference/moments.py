"""A posterior's summary numbers: exact where the guide has them, else seeded Monte Carlo.

An autoguide of the Gaussian family (``AutoNormal``, ``AutoMultivariateNormal``,
``AutoLowRankMultivariateNormal``, ``AutoDiagonalNormal``; ``AutoDelta`` as a point mass) holds
each latent element's marginal in the unconstrained space, ``u ~ N(mu, s^2)``, and the site is
``z = T(u)`` with ``T = biject_to(support)``. Hence

- quantiles are exact for an elementwise increasing ``T`` (``real``, ``positive``, intervals):
  ``z_p = T(mu + s * Phi^{-1}(p))``;
- mean and sd are exact for ``T`` the identity (``mu``, ``s``) and for ``T(u) = a + b e^u``,
  ``b > 0`` (``positive``, ``greater_than``: a shifted log-normal,
  ``E z = a + b e^{mu + s^2/2}``, ``sd z = b e^{mu + s^2/2} sqrt(e^{s^2} - 1)``);
- everything else (a logit-normal mean, a simplex, ``pyro.deterministic`` sites, other guides)
  is Monte Carlo over draws seeded by the fit's seed (:func:`seeded`), so every call gives the
  same numbers and the caller's random state is left as it was.

Each row lists its exact columns under ``"exact"``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from pyro import poutine
from pyro.infer.autoguide import AutoContinuous, AutoDelta, AutoNormal
from torch.distributions import biject_to
from torch.distributions import transforms as T

from bayesdl.inference.predictive import draw, latent_sites

#: the quantiles of a summary row
QUANTILES = (0.05, 0.5, 0.95)
#: the draws of a summary's Monte Carlo numbers
SUMMARY_DRAWS = 1000
#: the columns of a summary row
COLUMNS = ("mean", "std", *(f"{round(100 * p):d}%" for p in QUANTILES))


@contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Torch's generators seeded by ``seed`` inside, and as they were before on exit (the CPU
    one, and CUDA's where CUDA is in use)."""
    devices = list(range(torch.cuda.device_count())) if torch.cuda.is_initialized() else []
    with torch.random.fork_rng(devices=devices):
        torch.default_generator.manual_seed(int(seed))
        if devices:
            torch.cuda.manual_seed_all(int(seed))
        yield


@dataclass
class Marginal:
    """One site's elementwise marginal ``z = transform(u)``, ``u ~ N(loc, scale^2)``."""

    loc: torch.Tensor
    scale: torch.Tensor
    transform: T.Transform

    def exact(self) -> dict[str, Any]:
        """The summary columns known in closed form, as floats or nested lists."""
        parts = _increasing_parts(self.transform)
        if parts is None:
            return {}
        loc, scale = self.loc.double(), self.scale.double()
        out: dict[str, Any] = {}
        moments = _moments(parts, loc, scale)
        if moments is not None:
            out["mean"], out["std"] = (_plain(m) for m in moments)
        normal = torch.distributions.Normal(0.0, 1.0)
        for p, name in zip(QUANTILES, COLUMNS[2:], strict=True):
            z = normal.icdf(torch.tensor(p, dtype=torch.float64))
            out[name] = _plain(self.transform(loc + scale * z))
        return out


def gaussian_marginals(guide: Callable) -> dict[str, Marginal]:
    """The marginals of a Gaussian-family autoguide's latent sites (call it inside the fit's
    parameter store, after the guide has run once); ``{}`` for any other guide."""
    marginals: dict[str, Marginal] = {}
    trace = getattr(guide, "prototype_trace", None)
    if trace is None:
        return marginals
    with torch.no_grad():
        if isinstance(guide, AutoNormal):
            for name, site in trace.iter_stochastic_nodes():
                loc, scale = guide._get_loc_and_scale(name)
                marginals[name] = Marginal(loc, scale, biject_to(site["fn"].support))
        elif isinstance(guide, AutoDelta):
            for name, value in guide.median().items():
                marginals[name] = Marginal(value, torch.zeros_like(value), T.identity_transform)
        elif isinstance(guide, AutoContinuous):
            try:
                loc, scale = guide._loc_scale()
            except NotImplementedError:  # a flow, a Laplace guide before its approximation
                return marginals
            for (site, u_loc), (_, u_scale) in zip(
                guide._unpack_latent(loc), guide._unpack_latent(scale), strict=True
            ):
                marginals[site["name"]] = Marginal(u_loc, u_scale, biject_to(site["fn"].support))
    return {
        n: m
        for n, m in marginals.items()
        if m.loc.shape == trace.nodes[n]["value"].shape  # an elementwise transform
    }


def site_stats(d: torch.Tensor) -> dict[str, Any]:
    """Mean, sd and the :data:`QUANTILES` of draws ``[n, *shape]`` over dim 0, as floats or
    nested lists."""
    d = d.double()
    q = torch.quantile(d.reshape(len(d), -1), torch.tensor(QUANTILES, dtype=d.dtype), 0)
    row = {"mean": _plain(d.mean(0)), "std": _plain(d.std(0))}
    for name, v in zip(COLUMNS[2:], q, strict=True):
        row[name] = _plain(v.reshape(d.shape[1:]))
    return row


def summary_rows(
    draws: Mapping[str, torch.Tensor], marginals: Mapping[str, Marginal]
) -> dict[str, dict[str, Any]]:
    """``{site: {"mean", "std", "5%", "50%", "95%", "exact"}}``: the closed form of
    ``marginals`` where it is known (listed in ``"exact"``), the draws' statistics elsewhere."""
    rows = {}
    for name, d in draws.items():
        exact = marginals[name].exact() if name in marginals else {}
        rows[name] = {**site_stats(d), **exact, "exact": [c for c in COLUMNS if c in exact]}
    return rows


def _increasing_parts(t: T.Transform) -> list[T.Transform] | None:
    """The elementwise parts of ``t``, in order, or ``None`` unless each is increasing."""
    if isinstance(t, T.IndependentTransform):
        return _increasing_parts(t.base_transform)
    if isinstance(t, T.ComposeTransform):
        out: list[T.Transform] = []
        for part in t.parts:
            sub = _increasing_parts(part)
            if sub is None:
                return None
            out += sub
        return out
    if isinstance(t, T.ExpTransform | T.SigmoidTransform | T.SoftplusTransform | T.TanhTransform):
        return [t]
    if isinstance(t, T.AffineTransform) and t.event_dim == 0:
        return [t] if bool((torch.as_tensor(t.scale) > 0).all()) else None
    return None


def _moments(
    parts: list[T.Transform], loc: torch.Tensor, scale: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor] | None:
    """Mean and sd of ``parts(u)``, ``u ~ N(loc, scale^2)``, where known in closed form."""
    mean, sd = loc, scale
    if parts and isinstance(parts[0], T.ExpTransform):  # log-normal
        mean = torch.exp(loc + scale**2 / 2)
        sd = mean * torch.sqrt(torch.expm1(scale**2))
        parts = parts[1:]
    for part in parts:  # then a + b z, b > 0
        if not isinstance(part, T.AffineTransform):
            return None
        a, b = torch.as_tensor(part.loc).double(), torch.as_tensor(part.scale).double()
        mean, sd = a + b * mean, b * sd
    return mean, sd


def _plain(t: torch.Tensor) -> Any:
    t = t.detach().cpu()
    return t.item() if t.dim() == 0 else t.tolist()


def summary_sites(model: Callable, guide: Callable, data: Mapping[str, Any]) -> dict[str, Any]:
    """The sites a summary covers, ``{name: shape of one draw}``: the guide's latent sites and
    the model's ``pyro.deterministic`` ones (call it inside the fit's parameter store)."""
    with torch.no_grad():
        gtr = poutine.trace(guide).get_trace(**data)
        mtr = poutine.trace(poutine.replay(model, trace=gtr)).get_trace(**data)
    sites = {n: gtr.nodes[n]["value"].shape for n in latent_sites(guide, data, gtr)}
    sites.update(
        {
            n: s["value"].shape
            for n, s in mtr.nodes.items()
            if s["type"] == "sample" and s["infer"].get("_deterministic")
        }
    )
    return sites


def posterior_rows(
    model: Callable,
    guide: Callable,
    data: Mapping[str, Any],
    sites: Mapping[str, Any],
    num_samples: int,
    seed: int,
) -> dict[str, dict[str, Any]]:
    """:func:`summary_rows` of ``sites`` (``{name: shape}``) from ``num_samples`` draws of the
    guide and the model seeded by ``seed`` (the same numbers at every call, whichever of the
    sites are asked for) and the guide's :func:`gaussian_marginals`. Call it inside the fit's
    parameter store."""
    with seeded(seed), torch.no_grad():
        draws = draw(model, guide, data, num_samples, list(sites))
    draws = {k: _per_draw(draws[k], num_samples, sites[k]) for k in sites if k in draws}
    return summary_rows(draws, gaussian_marginals(guide))


def posterior_table(
    model: Callable,
    guide: Callable,
    data: Mapping[str, Any],
    seed: int,
    max_elements: int = 100,
) -> dict[str, dict[str, Any]]:
    """``summary.json``'s ``posterior``: the rows of :meth:`bayesdl.Posterior.summary` (the same
    numbers) of the sites of at most ``max_elements`` elements."""
    sites = summary_sites(model, guide, data)
    small = {k: v for k, v in sites.items() if math.prod(v) <= max_elements}
    return posterior_rows(model, guide, data, small, SUMMARY_DRAWS, seed) if small else {}


def _per_draw(v: torch.Tensor, n: int, shape: Any) -> torch.Tensor:
    """Predictive's draws ``[n, 1, ..., *shape]`` as ``[n, *shape]``."""
    return v.reshape(n, *shape) if v.numel() == n * math.prod(shape) else v
