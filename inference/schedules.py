"""Learning-rate and KL-weight schedules: plain functions of the step, nothing to save."""

from __future__ import annotations

import math

import torch
from pyro.poutine.messenger import Messenger

LR_SCHEDULES = ("constant", "linear", "cosine")


def lr_factor(schedule: str, step: int, total: int, warmup: int = 0) -> float:
    """Multiplier of the base learning rate at ``step`` of ``total``.

    ``linear`` decays to 0 (the sparse VD recipe), ``cosine`` follows half a cosine to 0;
    the first ``warmup`` steps ramp up linearly.
    """
    if warmup and step < warmup:
        return (step + 1) / warmup
    frac = min(1.0, step / max(1, total))
    if schedule == "constant":
        return 1.0
    if schedule == "linear":
        return 1.0 - frac
    if schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * frac))
    raise ValueError(f"unknown schedule {schedule!r}")


def kl_weight(step: int, warmup_steps: int, start_step: int = 0) -> float:
    """KL (beta) annealing: 0 until ``start_step``, then linearly to 1 over ``warmup_steps``."""
    if warmup_steps <= 0:
        return 1.0
    return float(min(1.0, max(0.0, (step - start_step) / warmup_steps)))


class KLScale(Messenger):
    """Scale ``log p(z) - log q(z)`` of every latent site by ``beta``: the ELBO becomes
    ``E_q log p(x | z) - beta KL(q || p)``.

    Latent sites are unobserved sample sites in model and guide, and sites a model marks
    with ``infer={"is_kl": True}`` (closed-form KL terms added as factors).
    """

    def __init__(self, beta: float = 1.0):
        super().__init__()
        self.beta = beta

    def _pyro_sample(self, msg):
        # a tensor beta is the compiled step's input (bayesdl.inference.compiled)
        beta = self.beta
        if (not torch.is_tensor(beta) and beta == 1.0) or type(msg["fn"]).__name__ == "_Subsample":
            return
        if not msg["is_observed"] or msg["infer"].get("is_kl", False):
            msg["scale"] = self.beta * msg["scale"]


def is_finite(x: torch.Tensor) -> bool:
    """One host synchronisation: is every entry finite?"""
    return bool(torch.isfinite(x).all())
