"""Importance-weighted estimates of ``log p(x_n)`` per datum (Burda, Grosse, Salakhutdinov 2016).

    L_K(x_n) = E[ log 1/K sum_k p(x_n, z_k) / q(z_k | x_n) ],   z_k ~ q(z | x_n)

``L_1`` is the ELBO, ``L_K <= L_{K+1} <= log p(x_n)`` and ``L_K -> log p(x_n)`` as ``K`` grows;
with ``K = 5000`` this is the standard test log-likelihood of a VAE. The weights come from
Pyro's own traces (guide traced under a plate of particles, model replayed against it), so the
estimate is of exactly the model that was fitted.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import pyro
import torch
from pyro import poutine


def log_weights(
    model: Callable,
    guide: Callable,
    data: Mapping[str, Any],
    num_samples: int,
    particle_dim: int = -2,
) -> torch.Tensor:
    """``log p(x_n, z_nk) - log q(z_nk | x_n)``, shape ``(num_samples, N)``, for a model whose
    per-datum sites sit in one ``pyro.plate("data", N)`` (dim -1); no gradients."""
    with torch.no_grad(), pyro.plate("iw_particles", num_samples, dim=particle_dim):
        guide_tr = poutine.trace(guide).get_trace(**data)
        model_tr = poutine.trace(poutine.replay(model, trace=guide_tr)).get_trace(**data)
    total: torch.Tensor | float = 0.0
    for tr, sign in ((model_tr, 1.0), (guide_tr, -1.0)):
        for site in tr.nodes.values():
            if site["type"] != "sample" or type(site["fn"]).__name__ == "_Subsample":
                continue
            total = total + sign * site["fn"].log_prob(site["value"])
    return torch.as_tensor(total).expand(num_samples, -1)


def iw_log_marginal(
    model: Callable,
    guide: Callable,
    data: Mapping[str, Any],
    num_samples: int,
    per_datum: Iterable[str] = ("x",),
    batch_size: int = 100,
    sample_chunk: int = 100,
) -> dict[str, torch.Tensor]:
    """Per-datum ``log_px`` (the bound ``L_K``, ``K = num_samples``) and ``elbo`` (the mean of the
    same ``K`` log weights, an unbiased ELBO estimate), both shape ``(N,)``.

    Memory stays bounded: ``batch_size`` data at a time, ``sample_chunk`` particles at a time,
    combined by a running log-sum-exp.
    """
    keys = list(per_datum)
    n = data[keys[0]].shape[0]
    log_px, elbo = [], []
    for start in range(0, n, batch_size):
        batch = {k: (v[start : start + batch_size] if k in keys else v) for k, v in data.items()}
        acc = None
        total = 0.0
        done = 0
        while done < num_samples:
            s = min(sample_chunk, num_samples - done)
            lw = log_weights(model, guide, batch, s)
            lse = torch.logsumexp(lw, 0)
            acc = lse if acc is None else torch.logaddexp(acc, lse)
            total = total + lw.sum(0)
            done += s
        log_px.append(acc - math.log(num_samples))
        elbo.append(total / num_samples)
    return {"log_px": torch.cat(log_px), "elbo": torch.cat(elbo)}
