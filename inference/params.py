"""The parameters a fit trains: those of Pyro's param store that model and guide touch, and
the networks' own; and the check that nothing else feeds the loss (a network used without
``pyro.module`` would stay at its initial weights while the ELBO seems to improve).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import pyro
import torch
from pyro import poutine

from bayesdl.inference.where import warn_at


def trainable_params(
    model, guide, data: Mapping[str, Any], modules: tuple = ()
) -> dict[str, torch.Tensor]:
    """Run model and guide once (no gradients) and return their unconstrained parameters,
    by name, so the optimizer holds the very tensors Pyro's param store holds.

    Parameters of ``modules`` (the model and guide, where they are ``nn.Module`` s, as in
    Pyro's ``ELBOModule``) are trained too, so a network needs no ``pyro.module`` call at
    every step.
    """
    with torch.no_grad(), poutine.trace(param_only=True) as tr:
        guide_tr = poutine.trace(guide).get_trace(**data)
        poutine.replay(model, trace=guide_tr)(**data)
    unconstrained = dict(pyro.get_param_store().named_parameters())
    params = {
        name: unconstrained[name]
        for name in sorted(tr.trace.nodes)
        if tr.trace.nodes[name]["type"] == "param"
    }
    seen = {id(p) for p in params.values()}
    for role, module in zip(("model", "guide"), modules, strict=False):
        if isinstance(module, torch.nn.Module):
            for name, p in module.named_parameters():
                if p.requires_grad and id(p) not in seen:
                    params[f"{role}.{name}"] = p
                    seen.add(id(p))
    return params


def untrained_leaves(loss: torch.Tensor, params: Mapping[str, torch.Tensor]) -> list[torch.Tensor]:
    """Leaf tensors that require grad and feed ``loss`` but are not among ``params``: weights
    the optimizer never moves (a network called in the model without ``pyro.module``)."""
    known = {id(p) for p in params.values()}
    found, seen, stack = [], set(), [loss.grad_fn]
    while stack:
        node = stack.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        leaf = getattr(node, "variable", None)  # AccumulateGrad: a leaf that gets a .grad
        if leaf is not None and id(leaf) not in known:
            found.append(leaf)
        stack.extend(n for n, _ in node.next_functions)
    return found


def warn_untrained(
    loss: torch.Tensor, params: Mapping[str, torch.Tensor], model: Callable | None = None
) -> None:
    """One :class:`UserWarning` per fit naming the shapes of :func:`untrained_leaves`, shown
    at the ``def`` of ``model``."""
    leaves = untrained_leaves(loss, params)
    if leaves:
        shapes = ", ".join(str(tuple(t.shape)) for t in leaves[:6])
        more = f" and {len(leaves) - 6} more" if len(leaves) > 6 else ""
        warn_at(
            f"{len(leaves)} tensor(s) of shape {shapes}{more} require grad and feed the ELBO but "
            "are not trained: register the network in the model with pyro.module('name', net) "
            "(or make it a PyroModule), or detach the tensor",
            UserWarning,
            model,
        )


class UntrainedCheck:
    """:func:`warn_untrained` once per fit, at the first loss either step computes (eager or
    compiled: a fit that falls back from one to the other warns once)."""

    def __init__(self, params: Mapping[str, torch.Tensor], model: Callable | None = None):
        self.params, self.model, self.done = params, model, False

    def __call__(self, loss: torch.Tensor) -> None:
        """Warn about ``loss`` 's untrained leaves, the first time only."""
        if not self.done:
            warn_untrained(loss, self.params, self.model)
            self.done = True
