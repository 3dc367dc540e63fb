"""Gradient-variance diagnostic: many independent estimates of ``grad_lambda ELBO``.

For an unbiased estimator ``g`` of ``grad L``, the mean of ``S`` draws has standard error
``sqrt(Var g / S)``; comparing estimators at the same ``lambda`` shows the price of the score
function (REINFORCE) against the pathwise (reparameterization) gradient (Mohamed et al., JMLR
2020, "Monte Carlo gradient estimation in machine learning").
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import Any

import torch

from bayesdl.inference.estimators import Estimator, make_estimator
from bayesdl.inference.train import FitConfig, fit, trainable_params


def gradient_draws(
    model: Callable,
    guide: Callable,
    data: Mapping[str, Any],
    estimator: str | Estimator,
    draws: int = 1000,
    particles: int = 1,
) -> dict[str, torch.Tensor]:
    """``draws`` gradient estimates of ``-ELBO`` per parameter, stacked on dim 0.

    Parameters are those of Pyro's param store (created on first use; existing values, e.g.
    after a fit, are kept).
    """
    est = estimator if isinstance(estimator, Estimator) else make_estimator(estimator, particles)
    m, g = est.wrap_model(model), est.wrap_guide(guide)
    params = trainable_params(m, g, data, (model, guide))
    with torch.no_grad():
        est.loss(m, g, **data)  # settle lazy state (baselines, plate nesting)
    names, tensors = list(params), list(params.values())
    out: dict[str, list[torch.Tensor]] = {n: [] for n in names}
    for _ in range(draws):
        loss = est.loss(m, g, **data)
        grads = torch.autograd.grad(loss, tensors, allow_unused=True)
        for n, t, gr in zip(names, tensors, grads, strict=True):
            out[n].append(torch.zeros_like(t) if gr is None else gr.detach())
    return {n: torch.stack(v) for n, v in out.items()}


def summarize_draws(draws: dict[str, torch.Tensor], max_elements: int = 4) -> list[dict[str, Any]]:
    """Mean, variance and standard error of the mean per parameter element (small parameters)
    or averaged over elements (larger ones, named ``name[mean over k]``)."""
    rows = []
    for name, d in draws.items():
        flat = d.reshape(d.shape[0], -1).double()
        s = flat.shape[0]
        mean, var = flat.mean(0), flat.var(0)
        if flat.shape[1] <= max_elements:
            for j in range(flat.shape[1]):
                label = name if flat.shape[1] == 1 else f"{name}[{j}]"
                rows.append(
                    {
                        "param": label,
                        "mean": mean[j].item(),
                        "variance": var[j].item(),
                        "stderr": (var[j] / s).sqrt().item(),
                    }
                )
        else:
            rows.append(
                {
                    "param": f"{name}[mean over {flat.shape[1]}]",
                    "mean": mean.mean().item(),
                    "variance": var.mean().item(),
                    "stderr": (var.mean() / s).sqrt().item(),
                }
            )
    return rows


def gradient_variance_table(problem, args, estimators: list[str]) -> list[dict[str, Any]]:
    """The CLI's table: for each estimator, gradient mean and variance at the same parameters
    (the guide's initialisation, or after ``args.init_steps`` reparameterized steps)."""
    import pyro

    rows = []
    for name in estimators:
        pyro.clear_param_store()
        pyro.set_rng_seed(args.seed)
        if args.init_steps > 0:
            cfg = replace(
                FitConfig(),
                steps=args.init_steps,
                lr=args.lr,
                seed=args.seed,
                particles=args.particles,
                estimator="reparam",
                device="cpu",
            )
            fit(problem.model, problem.guide, problem.data, cfg, progress=False)
            pyro.set_rng_seed(args.seed + 1)
        draws = gradient_draws(
            problem.model, problem.guide, problem.data, name, args.draws, args.particles
        )
        rows += [{"estimator": name, **r} for r in summarize_draws(draws)]
    return rows
