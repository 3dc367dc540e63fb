"""Has a fit converged? A test on the logged ELBO, and the step plan of ``--steps auto``.

The rows of ``metrics.jsonl`` hold the mean ELBO of each ``log_every`` steps. The test fits a
straight line to the last third of them (at least :data:`MIN_ROWS`) by least squares and asks
whether its rise across that window, ``b (t_last - t_first)``, is within ``Z`` standard errors
of zero, the rows' noise ``s`` being estimated from their successive differences (a trend
shifts those by a constant only): ``se = s (t_last - t_first) / sqrt(sum (t_i - t_bar)^2)``.
A fit whose ELBO still climbs by more than that (or than :data:`ATOL` nats, for an estimator
without noise) is not converged. Rows logged during KL or learning-rate warm-up are left out:
they estimate another objective.

``--steps auto`` keeps the learning rate constant until the test passes, then decays it over a
tail of :data:`TAIL_FRACTION` of the steps taken (by ``--lr-schedule``: cosine, linear, or
constant for no decay), at most :data:`MAX_AUTO_STEPS` steps in all.
"""

from __future__ import annotations

import argparse
import math
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

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
#: a rise below this many nats per fitted parameter (and at least ATOL) is flat whatever the
#: noise: an estimator without noise (many particles, a guide that holds the posterior) sees
#: the last hundredths of a nat climb as the learning rate decays
ATOL = 1e-2
#: the decaying tail of ``--steps auto``, as a share of the steps taken until the test passed
TAIL_FRACTION = 0.25


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


def elbo_test(history: Sequence[dict], from_step: int = 0, params: int = 1) -> Convergence:
    """Whether the ELBO of the logged ``history`` rows (``{"step", "elbo"}``) had flattened:
    the rise of a least-squares line through the last third of the rows after ``from_step``
    is within ``Z`` standard errors, or within :data:`ATOL` nats per fitted parameter
    (``params`` numbers in all)."""
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
    limit = max(Z * stderr, ATOL * max(1, params))
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
    ``steps="auto"`` the factor stays 1 (after ``warmup``) and :meth:`observe` runs
    :func:`elbo_test` at every logged row; once it passes at step ``s`` the plan ends at
    ``s + TAIL_FRACTION s`` (a multiple of ``log_every``), decaying by ``schedule`` over that
    tail. ``from_step`` is where the objective stops changing (KL and learning-rate warm-up).
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
        self.flat_at: int | None = None  # the step at which the test passed (auto)
        self.params = 1  # numbers the optimizer fits (set by the Trainer): the test's tolerance

    def lr_factor(self, step: int) -> float:
        """Multiplier of the base learning rate at ``step``."""
        if not self.auto:
            return lr_factor(self.schedule, step, self.total, self.warmup)
        if self.warmup and step < self.warmup:
            return (step + 1) / self.warmup
        if self.flat_at is None or step < self.flat_at:
            return 1.0
        return lr_factor(self.schedule, step - self.flat_at, self.total - self.flat_at)

    def observe(self, history: Sequence[dict]) -> None:
        """After a logged row: in auto mode, end the plan with a tail once the ELBO is flat."""
        if not self.auto or self.flat_at is not None or not history:
            return
        if elbo_test(history, self.from_step, self.params).converged:
            s = int(history[-1]["step"])
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
        """``summary.json``'s ``convergence``: the test on the run's rows; an auto run is
        converged when its test passed before the tail."""
        test = elbo_test(history, self.from_step, self.params)
        out = {"steps": AUTO if self.auto else self.total, **test.as_dict()}
        if self.auto:
            out["flat_at_step"] = self.flat_at
            if self.flat_at is not None and not test.converged:
                # the decaying tail raises the ELBO a little more: that is not a climb
                before = [r for r in history if r["step"] <= self.flat_at]
                test = elbo_test(before, self.from_step, self.params)
                out.update(test.as_dict())
            elif self.flat_at is None:
                out["converged"] = False
                out["reason"] = f"not flat after {self.cap} steps (the cap): {test.reason}"
        return out


def warn_unconverged(verdict: dict, what: str = "the fit") -> None:
    """One :class:`ConvergenceWarning` line (no source line under it) when ``verdict`` (a
    ``summary.json`` ``convergence``) says not converged."""
    if not verdict or verdict.get("converged") is not False:
        return
    advice = verdict.get("advice", "run longer: --steps auto, or more --steps")
    message = f"{what} has not converged: {verdict.get('reason')}; {advice}"
    # warn_explicit at line 0: Python prints the message alone, on one line
    warnings.warn_explicit(message, ConvergenceWarning, "bayesdl", 0)
