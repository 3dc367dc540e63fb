"""Has a fit converged? Tests on the logged ELBO and on the guide, and ``--steps auto``.

The rows of ``metrics.jsonl`` hold the mean ELBO of each ``log_every`` steps. The ELBO test
fits a straight line to the last third of them (at least :data:`MIN_ROWS`) by least squares
and asks whether its rise across that window, ``b (t_last - t_first)``, is within ``Z``
standard errors of zero, the rows' noise ``s`` being estimated from their successive
differences (a trend shifts those by a constant only; autocorrelated rows make ``s`` smaller,
so the test errs towards "still rising"): ``se = s (t_last - t_first) / sqrt(sum (t_i -
t_bar)^2)``. A rise within :data:`ATOL` nats is flat whatever the noise (an estimator without
noise). Neither bound grows with the guide: a guide of 1,274 numbers is held to the same
nats as one of 2.

For Pyro's Gaussian autoguides the guide itself is tested too
(:mod:`bayesdl.inference.drift`): over the same window, no latent coordinate's location may
move by more than a tenth of its posterior sd, nor its sd by more than 10 %, which is what
a user reads from the posterior; minibatch noise cannot hide a trend there.

Rows logged during KL or learning-rate warm-up are left out: they estimate another
objective. ``--steps auto`` keeps the learning rate constant until the ELBO is flat and the
guide settled; a guide that only wanders by the learning rate's noise has the rate halved
(at most :data:`HALVINGS` times) and is judged again on the rows that follow; once the tests
pass, a tail of :data:`TAIL_FRACTION` of the steps taken runs at the same rate and the fit's
parameters become the mean of its iterates (Polyak-Ruppert averaging), at most
:data:`MAX_AUTO_STEPS` steps in all. ``--lr-schedule`` shapes fixed step counts.
"""

from __future__ import annotations

import argparse
import math
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

from bayesdl.inference.drift import drift_test
from bayesdl.inference.schedules import lr_factor

AUTO = "auto"
#: the most steps ``--steps auto`` takes
MAX_AUTO_STEPS = 50_000
#: the fewest rows the test looks at (fewer logged rows: not converged)
MIN_ROWS = 5
#: the share of the (usable) rows the test looks at: the last third
WINDOW = 1 / 3
#: a rise within Z standard errors is noise
Z = 2.0
#: a rise of at most this many nats over the window is flat whatever the noise (an estimator
#: without noise sees the last hundredths of a nat climb as the learning rate decays); the
#: same for every guide
ATOL = 0.05
#: the averaged tail of ``--steps auto``, as a share of the steps taken until the tests passed
TAIL_FRACTION = 0.25
#: the most times ``--steps auto`` halves the learning rate (to 1/32 of ``--lr``)
HALVINGS = 5


class ConvergenceWarning(RuntimeWarning):
    """A fit stopped before its ELBO flattened, or MCMC chains that disagree (R-hat)."""


class _BadSteps(argparse.ArgumentTypeError, ValueError):
    """argparse prints its message; the Python keywords' check reads it as a ValueError."""


def steps_or_auto(s: str) -> int | str:
    """``--steps``: a positive integer, or ``auto`` (until the ELBO flattens)."""
    if s.strip().lower() == AUTO:
        return AUTO
    try:
        return int(s)
    except ValueError:
        raise _BadSteps(f"takes an integer or auto, got {s!r}") from None


@dataclass
class Convergence:
    """The verdict of :func:`elbo_test` and what it rests on."""

    converged: bool
    rise: float  # the ELBO's gain across the window, by the least-squares line (nats)
    stderr: float  # its standard error under the rows' noise
    rows: int  # rows in the window
    first_step: int
    last_step: int
    reason: str

    def as_dict(self) -> dict:
        """JSON-ready (``summary.json``'s ``convergence``)."""
        out = asdict(self)
        for k in ("rise", "stderr"):
            out[k] = None if not math.isfinite(out[k]) else round(out[k], 6)
        return out


def elbo_test(history: Sequence[dict], from_step: int = 0) -> Convergence:
    """Whether the ELBO of the logged ``history`` rows (``{"step", "elbo"}``) had flattened:
    the rise of a least-squares line through the last third of the rows after ``from_step``
    is within ``Z`` standard errors, or within :data:`ATOL` nats."""
    rows = [r for r in history if r["step"] > from_step and math.isfinite(r["elbo"])]
    n = len(rows)
    if n < MIN_ROWS:
        last = rows[-1]["step"] if rows else from_step
        return Convergence(
            False, math.nan, math.nan, n, rows[0]["step"] if rows else from_step, last,
            f"{n} ELBO value(s) logged, {MIN_ROWS} needed to judge (or a lower --log-every)",
        )  # fmt: skip
    k = max(MIN_ROWS, math.ceil(WINDOW * n))
    window = rows[-k:]
    t = np.array([r["step"] for r in window], dtype=np.float64)
    y = np.array([r["elbo"] for r in window], dtype=np.float64)
    dt = t - t.mean()
    slope = float((dt * (y - y.mean())).sum() / (dt**2).sum())
    span = float(t[-1] - t[0])
    rise = slope * span
    d = np.diff(y)
    # successive differences: a robust spread (MAD) of d, over sqrt 2 for one row's noise
    noise = 1.4826 * float(np.median(np.abs(d - np.median(d)))) / math.sqrt(2)
    noise = max(noise, float(np.std(d)) / math.sqrt(2) / 3)  # a MAD of 0 from ties
    stderr = noise * span / math.sqrt(float((dt**2).sum()))
    limit = max(Z * stderr, ATOL)
    ok = rise <= limit
    if ok:
        reason = f"the ELBO rose {rise:.3g} over steps {int(t[0])}-{int(t[-1])}, within {limit:.3g}"
    else:
        reason = (
            f"the ELBO was still rising: +{rise:.3g} over steps {int(t[0])}-{int(t[-1])}, "
            f"{rise / max(stderr, 1e-300):.1f} standard errors"
        )
    return Convergence(ok, rise, stderr, k, int(t[0]), int(t[-1]), reason)


class StepPlan:
    """How many steps a fit takes and its learning-rate factor at each.

    A fixed number of ``steps`` follows ``schedule`` over them (:func:`lr_factor`). With
    ``steps="auto"`` the factor stays 1 (after ``warmup``) and :meth:`observe` runs the tests
    at every logged row. The guide *settled* and the ELBO flat at step ``s``: the plan ends at
    ``s + TAIL_FRACTION s`` (a multiple of ``log_every``), at the same learning rate, and the
    fit's parameters become the mean of the tail's iterates
    (:class:`~bayesdl.inference.guide_moments.TailAverage`). The guide *stationary* but not
    settled (it wanders by the learning rate's noise, more than a tenth of a posterior sd):
    the learning rate is halved (at most :data:`HALVINGS` times) and the tests start again
    on the rows that follow, as Welandawe et al. (2022) lower it when the iterates stop
    improving. ``from_step`` is where the objective stops changing (KL and learning-rate
    warm-up).

    ``moments`` holds the guide's rows (``{"step", "loc", "sd"}``) where the trainer tracks
    them (:class:`~bayesdl.inference.guide_moments.IterateAverage`); ``names`` their
    coordinates.
    """

    def __init__(
        self,
        steps: int | str,
        schedule: str = "constant",
        warmup: int = 0,
        log_every: int = 100,
        from_step: int = 0,
        cap: int = MAX_AUTO_STEPS,
    ):
        self.auto = steps == AUTO
        self.schedule, self.warmup, self.log_every = schedule, warmup, log_every
        self.from_step = max(from_step, warmup)
        self.cap = cap
        self.total: int = cap if self.auto else int(steps)
        self.flat_at: int | None = None  # the step at which the tests passed (auto)
        self.tracked = False  # whether the guide's moments are logged (set by the Trainer)
        self.moments: list[dict] = []
        self.names: list[str] | None = None
        self.halved_at: list[int] = []  # auto: the steps after which the rate was halved

    @property
    def level_from(self) -> int:
        """The step from which the tests judge: the last halving, or ``from_step``."""
        return max(self.from_step, self.halved_at[-1] if self.halved_at else 0)

    def lr_factor(self, step: int) -> float:
        """Multiplier of the base learning rate at ``step``."""
        if not self.auto:
            return lr_factor(self.schedule, step, self.total, self.warmup)
        if self.warmup and step < self.warmup:
            return (step + 1) / self.warmup
        return 0.5 ** sum(1 for s in self.halved_at if step >= s)

    def _rows(self, last_step: float) -> list[dict]:
        return [r for r in self.moments if r["step"] <= last_step]

    def observe(self, history: Sequence[dict]) -> None:
        """After a logged row: in auto mode, end the plan with a tail once the tests pass, or
        halve the learning rate once the guide only wanders."""
        if not self.auto or self.flat_at is not None or not history:
            return
        s = int(history[-1]["step"])
        if not elbo_test(history, self.level_from).converged:
            return
        if self.tracked:
            drift = drift_test(self._rows(s), self.level_from, self.names)
            if not drift.settled:
                if drift.stationary and len(self.halved_at) < HALVINGS:
                    self.halved_at.append(s)
                return
        tail = max(self.log_every, TAIL_FRACTION * s)
        tail = self.log_every * math.ceil(tail / self.log_every)
        self.flat_at, self.total = s, min(self.cap, s + tail)

    def replay(self, history: Sequence[dict]) -> None:
        """Rebuild the plan of a resumed fit from its rows (as :meth:`observe` saw them)."""
        for i in range(1, len(history) + 1):
            if not self.auto or self.flat_at is not None:
                break
            self.observe(history[:i])

    def verdict(self, history: Sequence[dict]) -> dict:
        """``summary.json``'s ``convergence``: the ELBO test and, where the guide is tracked,
        its drift, over the last third of a fixed run; an auto run is converged when both
        passed before its tail (the tail raises the ELBO a little more and moves the guide
        by what the learning rate's noise hid: that is convergence, not a climb)."""
        end = self.flat_at if self.auto and self.flat_at is not None else math.inf
        start = self.level_from if self.auto else self.from_step
        test = elbo_test([r for r in history if r["step"] <= end], start)
        out = {"steps": AUTO if self.auto else self.total, **test.as_dict()}
        out["test"] = "ELBO trend" + (" and guide drift" if self.tracked else "")
        out["advice"] = ADVICE
        if self.tracked:
            drift = drift_test(self._rows(end), start, self.names)
            out["parameters"] = {"checked": True, **drift.as_dict()}
            if out["converged"] and not drift.settled:
                out["converged"] = False
                out["reason"] = f"the guide was still moving: {drift.reason}"
        else:
            out["parameters"] = {"checked": False, "reason": UNTRACKED}
        if self.auto:
            out["flat_at_step"] = self.flat_at
            out["lr_halved_at"] = list(self.halved_at)
            if self.flat_at is None:
                out["converged"] = False
                out["reason"] = f"not settled after {self.cap} steps (the cap): {out['reason']}"
        return out


#: what a run whose guide is not tracked says under ``convergence.parameters``
UNTRACKED = (
    "not checked: the guide is not one of Pyro's Gaussian autoguides (a guide function, a "
    "network, AutoDelta or a MAP), so only the ELBO was tested"
)
#: the remedy a run that has not converged names
ADVICE = "run longer (--steps auto, or more --steps), or change --lr"


def warn_unconverged(verdict: dict, what: str = "the fit") -> None:
    """One :class:`ConvergenceWarning` line (no source line under it) when ``verdict`` (a
    ``summary.json`` ``convergence``) says not converged."""
    if not verdict or verdict.get("converged") is not False:
        return
    advice = verdict.get("advice", "run longer: --steps auto, or more --steps")
    message = f"{what} has not converged: {verdict.get('reason')}; {advice}"
    # warn_explicit at line 0: Python prints the message alone, on one line
    warnings.warn_explicit(message, ConvergenceWarning, "bayesdl", 0)
