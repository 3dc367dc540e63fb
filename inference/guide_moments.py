"""Where a Gaussian guide stands: its location and sd per latent coordinate, while it is fitted.

An autoguide of Pyro's is a Gaussian ``q(u) = N(m, S)`` over the model's latents ``u`` in
unconstrained space (AutoNormal per site, AutoDiagonalNormal / AutoMultivariateNormal /
AutoLowRankMultivariateNormal over the packed vector); its marginal of coordinate ``j`` is
``N(m_j, s_j^2)``. How far ``m_j`` moved in units of ``s_j``, and ``log s_j``, is the change of
the posterior a user reads (:mod:`bayesdl.inference.drift`). Other guides (a guide function, a
network, AutoDelta, AutoLaplaceApproximation's MAP) have no such scale here: :func:`readable`
says so and the engine tracks nothing for them.

:class:`IterateAverage` keeps the mean of the fitted (unconstrained) parameters over each log
window (Polyak-Ruppert averaging, one in-place add per step on the device, no host sync) and
reads the guide's ``(m, s)`` at that mean, so the per-step jitter of Adam averages out of
every row as the minibatch noise averages out of the logged ELBO.
"""

from __future__ import annotations

from collections.abc import Mapping
from contextlib import contextmanager

import torch
from pyro.infer.autoguide import (
    AutoDiagonalNormal,
    AutoLowRankMultivariateNormal,
    AutoMultivariateNormal,
    AutoNormal,
)

from bayesdl.inference.errors import UserError

#: guides of more fitted numbers than this are not tracked (the rows are kept in memory)
MAX_TRACKED = 100_000
GAUSSIAN_CONTINUOUS = (AutoDiagonalNormal, AutoMultivariateNormal, AutoLowRankMultivariateNormal)


def readable(guide) -> bool:
    """Whether :func:`guide_moments` reads this guide (one of Pyro's Gaussian autoguides)."""
    return isinstance(guide, (AutoNormal, *GAUSSIAN_CONTINUOUS))


@torch.no_grad()
def guide_moments(guide) -> tuple[torch.Tensor, torch.Tensor]:
    """``(m, s)``: the guide's location and marginal sd of every unconstrained latent
    coordinate, flat, in the current param store (see :func:`readable`)."""
    if isinstance(guide, AutoNormal):
        locs, scales = [], []
        for name in guide._event_dims:
            loc, scale = guide._get_loc_and_scale(name)
            locs.append(loc.reshape(-1))
            scales.append(scale.reshape(-1))
        return torch.cat(locs), torch.cat(scales)
    loc, scale = guide._loc_scale()
    return loc.reshape(-1), scale.reshape(-1)


def coordinate_names(guide) -> list[str]:
    """``site`` or ``site[i]`` for each coordinate of :func:`guide_moments`."""
    if isinstance(guide, AutoNormal):
        shapes = {n: guide._get_loc_and_scale(n)[0].shape for n in guide._event_dims}
    else:
        shapes = dict(guide._unconstrained_shapes)
    names = []
    for site, shape in shapes.items():
        n = shape.numel()
        names.extend([site] if n == 1 else [f"{site}[{i}]" for i in range(n)])
    return names


@contextmanager
def _values(params: Mapping[str, torch.Tensor], values: list[torch.Tensor]):
    """The parameters temporarily holding ``values`` (restored on exit)."""
    tensors = list(params.values())
    saved = [p.detach().clone() for p in tensors]
    try:
        with torch.no_grad():
            for p, v in zip(tensors, values, strict=True):
                p.copy_(v)
        yield
    finally:
        with torch.no_grad():
            for p, v in zip(tensors, saved, strict=True):
                p.copy_(v)


class IterateAverage:
    """The guide's ``(m, s)`` at the mean of its parameters over each log window.

    :meth:`add` after every optimizer step (``torch._foreach_add_`` on the device);
    :meth:`close` at a log point returns the row ``(m, s)`` as float64 CPU tensors.
    """

    def __init__(self, guide, params: Mapping[str, torch.Tensor]):
        self.guide, self.params = guide, dict(params)
        self.tensors = [p for p in self.params.values()]
        self.sums = [torch.zeros_like(p, requires_grad=False) for p in self.tensors]
        self.count = 0
        self.names = coordinate_names(guide)

    @classmethod
    def for_guide(cls, guide, params: Mapping[str, torch.Tensor]) -> IterateAverage | None:
        """An average for a :func:`readable` guide of at most :data:`MAX_TRACKED` numbers."""
        if not readable(guide) or not params:
            return None
        if sum(p.numel() for p in params.values()) > MAX_TRACKED:
            return None
        return cls(guide, params)

    def add(self) -> None:
        """Add the parameters' current values to the window's sums."""
        with torch.no_grad():
            torch._foreach_add_(self.sums, [p.detach() for p in self.tensors])
        self.count += 1

    def close(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The row of this window, and a fresh window."""
        if self.count == 0:
            m, s = guide_moments(self.guide)
        else:
            means = [t / self.count for t in self.sums]
            with _values(self.params, means):
                m, s = guide_moments(self.guide)
        for t in self.sums:
            t.zero_()
        self.count = 0
        return m.detach().double().cpu(), s.detach().double().cpu()

    def state(self) -> dict:
        """The open window (for checkpoints)."""
        return {"sums": [t.detach().cpu() for t in self.sums], "count": self.count}

    def load(self, state: dict | None) -> None:
        """Continue the open window of a checkpoint."""
        if not state:
            return
        _load_sums(self.sums, state["sums"])
        self.count = int(state["count"])


class TailAverage:
    """The Polyak-Ruppert average of the fitted parameters over the tail of ``--steps auto``
    (every step after the tests passed, at the constant learning rate): the iterates jitter
    around the optimum by the learning rate's noise, their mean does not (Welandawe, Andersen,
    Vehtari & Huggins 2022 average the iterates the same way). :meth:`apply` writes it into
    the parameters at the end of the fit."""

    def __init__(self, params: Mapping[str, torch.Tensor]):
        self.tensors = list(params.values())
        self.sums = [torch.zeros_like(p, requires_grad=False) for p in self.tensors]
        self.count = 0

    def add(self) -> None:
        """Add the parameters' current values."""
        with torch.no_grad():
            torch._foreach_add_(self.sums, [p.detach() for p in self.tensors])
        self.count += 1

    def apply(self) -> None:
        """Set every parameter to its mean over the tail (nothing when no step was added)."""
        if self.count == 0:
            return
        with torch.no_grad():
            for p, s in zip(self.tensors, self.sums, strict=True):
                p.copy_(s / self.count)

    def state(self) -> dict:
        """The sums so far (for checkpoints)."""
        return {"sums": [t.detach().cpu() for t in self.sums], "count": self.count}

    def load(self, state: dict | None) -> None:
        """Continue the sums of a checkpoint."""
        if not state:
            return
        _load_sums(self.sums, state["sums"])
        self.count = int(state["count"])


def _load_sums(sums: list[torch.Tensor], saved: list[torch.Tensor]) -> None:
    """Copy a checkpoint's sums (entries checked by ``checkpoint_check``) into ``sums``; a
    :class:`UserError` when their number or shapes are not this guide's."""
    if len(saved) != len(sums) or any(t.shape != v.shape for t, v in zip(sums, saved, strict=True)):
        raise UserError(
            "the checkpoint's iterate averages do not fit this guide's parameters (other "
            "shapes): the file is damaged or was not written for this run"
        )
    for t, v in zip(sums, saved, strict=True):
        t.copy_(v.to(t.device))
