"""A run: a workflow (its options), its problem (model, guide, data, parameters), the result of
the method that fitted it and its summary; what every method does with one (build it in a
throwaway parameter store, seed its draws, read the model's parameters)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyro
import torch
from pyro import poutine

from bayesdl.inference.errors import UserError
from bayesdl.inference.train import MAX_SEED
from bayesdl.workflows.base import Problem, Workflow


@dataclass
class Run:
    """A fitted workflow: its options, problem (model, guide, data, parameters), the method's
    result (:class:`~bayesdl.inference.train.FitResult` for SVI,
    :class:`~bayesdl.inference.mcmc.MCMCResult` for NUTS) and the summary written to
    ``summary.json``."""

    workflow: Workflow
    problem: Problem
    result: Any
    summary: dict[str, Any]
    out: Path | None = None


def build(workflow: Workflow, *, guided: bool = True) -> Problem:
    """Build a workflow's problem in a throwaway param store (trial runs of the user's model
    create parameters that must not leak into the fit). ``guided`` false: the method draws
    the posterior without a guide (NUTS), which the workflow then need not build
    (:attr:`~bayesdl.workflows.base.Workflow.guided`)."""
    workflow.guided = guided
    with pyro.get_param_store().scope():
        return workflow.build()


def seed_draws(workflow: Workflow, seed: int | None) -> None:
    """Evaluation and prediction draw from the posterior: seed them (the run's seed by default)
    so that the same command gives the same numbers."""
    value = seed if seed is not None else workflow.engine.seed
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_SEED:
        raise UserError(f"--seed must be an integer from 0 to 2**32-1, got {value!r}")
    pyro.set_rng_seed(value)


def posterior_guide(workflow: Workflow, problem: Problem):
    """The guide whose draws are the posterior: the fitted one, or what the workflow derives
    from it (``workflow.posterior_guide``, e.g. the Laplace approximation)."""
    pick = getattr(workflow, "posterior_guide", None)
    return pick(problem) if pick is not None else problem.guide


def model_params(problem: Problem, max_elements: int | None = None) -> dict[str, torch.Tensor]:
    """The constrained values of the ``pyro.param`` sites of the *model* (not the guide's),
    read in the problem's param store; sites above ``max_elements`` are left out."""
    with problem.scope(), torch.no_grad(), poutine.trace(param_only=True) as tr:
        guide_tr = poutine.trace(problem.guide).get_trace(**problem.data)
        poutine.replay(problem.model, trace=guide_tr)(**problem.data)
    with problem.scope(), torch.no_grad(), poutine.trace(param_only=True) as gtr:
        poutine.trace(problem.guide).get_trace(**problem.data)
    out = {}
    for name, site in tr.trace.nodes.items():
        if site["type"] != "param" or name in gtr.trace.nodes:
            continue
        value = site["value"].detach()
        if max_elements is None or value.numel() <= max_elements:
            out[name] = value
    return out


def on_device(data: dict[str, Any], device: str | torch.device) -> dict[str, Any]:
    """The tensors of ``data`` moved to ``device`` (other values as they are)."""
    return {k: v.to(device) if hasattr(v, "to") else v for k, v in data.items()}
