"""A posterior as ArviZ ``InferenceData``, with the groups ``az.loo``, ``az.waic`` and
``az.plot_ppc`` read (the groups NumPyro's and PyMC's exports carry).

For every posterior draw ``z_m`` (``[chains, samples]``), one trace of the model conditioned on
``z_m`` (Pyro's ``poutine.condition``, one run per draw, so a model's ``x.mean()`` never
averages over draws) gives, per observed site ``y``:

* ``log_likelihood``: ``log p(y_i | z_m)`` per observation ``i`` (the site's batch elements;
  event dimensions summed, a mask applied);
* ``posterior_predictive``: ``y*_m ~ p(y | z_m)``, a draw of the site's distribution at ``z_m``;
* ``observed_data``: ``y`` itself.

``posterior`` holds the latent (and ``pyro.deterministic``) sites; ``sample_stats`` what the
sampler reported per draw (NUTS: ``diverging``, ``acceptance_rate``, ``lp``, ``step_size``).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping
from typing import Any

import torch
from pyro import poutine

from bayesdl.inference.errors import UserError

__all__ = ["inference_data", "observed_terms"]


def _arviz():
    try:
        import arviz as az
    except ImportError:
        raise UserError(
            "to_arviz needs ArviZ: pip install 'bayesdl[arviz]' (or pip install arviz)"
        ) from None
    return az


def _observed(site: dict) -> bool:
    return (
        site["type"] == "sample"
        and site["is_observed"]
        and not site["infer"].get("_deterministic")
        and not site["infer"].get("is_auxiliary")  # pyro.factor
    )


class _NotDrawn(Exception):
    """A latent site the draws do not hold (summed out by enumeration)."""


def _unconditioned(site: dict, latents: Mapping[str, torch.Tensor]) -> bool:
    return (
        site["type"] == "sample"
        and not site["is_observed"]
        and site["name"] not in latents
        and type(site["fn"]).__name__ != "_Subsample"
    )


def observed_terms(
    model: Callable, data: Mapping[str, Any], latents: Mapping[str, torch.Tensor]
) -> dict[str, tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """``{site: (log p(y_i | z), y* ~ p(y | z), y)}`` of every observed site of one run of
    ``model(**data)`` conditioned on the draw ``latents``."""
    with torch.no_grad(), poutine.block():
        tr = poutine.trace(poutine.condition(model, data=dict(latents))).get_trace(**data)
        out = {}
        for name, site in tr.nodes.items():
            if _unconditioned(site, latents):
                raise _NotDrawn(name)
            if name in latents or not _observed(site):  # a draw's own value, conditioned
                continue
            fn, value = site["fn"], site["value"]
            log_p = fn.log_prob(value)
            if site.get("mask") is not None:
                log_p = log_p.masked_fill(~site["mask"].expand_as(log_p), 0.0)
            out[name] = (log_p, fn.sample(), value)
    return out


def _stack(rows: list[dict[str, torch.Tensor]], chains: int) -> dict[str, Any]:
    """Per-draw tensors ``[chains * samples]`` of each key as numpy ``[chains, samples, ...]``."""
    out = {}
    for k in rows[0]:
        t = torch.stack([r[k] for r in rows])
        out[k] = t.reshape(chains, -1, *t.shape[1:]).cpu().numpy()
    return out


def inference_data(
    model: Callable,
    data: Mapping[str, Any],
    draws: Mapping[str, torch.Tensor],
    latent_names: list[str] | None = None,
    sample_stats: Mapping[str, torch.Tensor] | None = None,
):
    """ArviZ ``InferenceData`` of ``draws`` (``{site: [chains, samples, *shape]}``) with the
    groups above; ``latent_names``: the sites to condition on (default: every site of
    ``draws``); ``sample_stats``: ``{stat: [chains, samples]}``."""
    az = _arviz()
    names = list(draws) if latent_names is None else latent_names
    chains, samples = next(iter(draws.values())).shape[:2]
    flat = {k: v.reshape(chains * samples, *v.shape[2:]) for k, v in draws.items()}
    log_lik, predictive, observed = [], [], {}
    try:
        for m in range(chains * samples):
            terms = observed_terms(model, data, {k: flat[k][m] for k in names})
            log_lik.append({k: t[0] for k, t in terms.items()})
            predictive.append({k: t[1] for k, t in terms.items()})
            observed = {k: t[2].detach().cpu().numpy() for k, t in terms.items()}
    except _NotDrawn as e:
        warnings.warn(
            f"to_arviz: the latent site {e} is not drawn (summed out by enumeration), so "
            "p(y | z) per draw is not known: only the posterior group is written",
            UserWarning,
            stacklevel=3,
        )
        observed = {}
    groups: dict[str, Any] = {
        "posterior": {k: v.detach().cpu().numpy() for k, v in draws.items()},
    }
    if observed:
        groups["log_likelihood"] = _stack(log_lik, chains)
        groups["posterior_predictive"] = _stack(predictive, chains)
        groups["observed_data"] = observed
    if sample_stats:
        groups["sample_stats"] = {k: v.detach().cpu().numpy() for k, v in sample_stats.items()}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        return az.from_dict(**groups)
