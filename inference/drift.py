"""Is the guide still moving on the scale of the posterior? A window-means test.

Each logged row holds the guide's location ``m_j`` and sd ``s_j`` per unconstrained latent
coordinate, read at the mean of its parameters over that row's steps
(:class:`~bayesdl.inference.guide_moments.IterateAverage`). Over the last third of the rows
(the window of the ELBO test), split into an early half ``A`` and a late half ``B``:

    d_j = (mean_B m_j - mean_A m_j) / s_j        (the location's move, in posterior sds)
    l_j = mean_B log s_j - mean_A log s_j          (the sd's relative change)

The guide is **stationary** (at the current learning rate) when no coordinate moved both
significantly, beyond ``Z_D`` standard errors, and by more than :data:`TAU`: the standard
error of ``d_j`` comes from the successive differences of its rows (a trend shifts them by a
constant only; positively autocorrelated rows make it smaller, so the test errs towards
"moving"), and ``Z_D`` is the two-sided 5 % Bonferroni bound over the ``2 D`` statistics.
It is **settled** when every ``|d_j|`` is at most :data:`TAU` and every ``|l_j|`` at most
:data:`TAU_SD` (below, ``TAU`` stands for either), or at most
``Z_D`` standard errors where those are at most ``NOISY * TAU``: a move beyond ``TAU`` passes
only as noise, and only where the noise is too small to hide a move beyond
``NOISY * TAU``. The test does not loosen as the guide grows (the bound is per coordinate, in
the posterior's own units, and ``Z_D`` grows with ``D``, which only tightens the noise
clause); noise cannot hide a larger move (noise adds to ``|d_j|``; noise beyond
``NOISY * TAU / Z_D`` per estimate leaves the strict bound alone). A guide stationary but not
settled wanders by the learning rate's noise: ``--steps auto`` then halves the rate.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from statistics import NormalDist

import numpy as np

#: the largest move of a location (in posterior sds) or of a log sd over the window that
#: counts as settled
TAU = 0.1
#: the same for a log sd: 5 % (the ELBO hardly sees an sd 17 % short in one direction of a
#: correlated posterior, 0.03 nats, so the guide test must)
TAU_SD = 0.05
#: a move of up to NOISY * TAU passes when it is within the noise of the rows (no trend
#: shows), and the noise itself is that small
NOISY = 2.0
#: the fewest rows in the window (4 per half)
MIN_WINDOW = 8
#: the family-wise level of the stationarity test
ALPHA = 0.05


@dataclass
class Drift:
    """The verdict of :func:`drift_test`."""

    settled: bool  # every |d_j|, |l_j| <= TAU
    stationary: bool  # no coordinate moved significantly by more than TAU
    loc_move: float  # max_j |d_j| (posterior sds)
    sd_change: float  # max_j |l_j|
    worst: str  # the coordinate that moved most
    rows: int
    first_step: int
    last_step: int
    reason: str

    def as_dict(self) -> dict:
        """JSON-ready (``summary.json``'s ``convergence.parameters``)."""
        out = dict(vars(self))
        for k in ("loc_move", "sd_change"):
            out[k] = None if not math.isfinite(out[k]) else round(out[k], 4)
        return out


def _noise(x: np.ndarray) -> np.ndarray:
    """Per column, one row's noise from successive differences: a robust spread (MAD) over
    ``sqrt 2``, at least a third of their sd (a MAD of 0 from ties)."""
    d = np.diff(x, axis=0)
    mad = np.median(np.abs(d - np.median(d, axis=0)), axis=0)
    return np.maximum(1.4826 * mad, d.std(axis=0) / 3) / math.sqrt(2)


def drift_test(
    rows: Sequence[dict], from_step: int = 0, names: Sequence[str] | None = None
) -> Drift:
    """Whether the guide's location and sd had settled over the last third of ``rows``
    (``{"step", "loc", "sd"}``, the arrays of one logged row) after ``from_step``."""
    usable = [r for r in rows if r["step"] > from_step]
    n = len(usable)
    k = max(MIN_WINDOW, math.ceil(n / 3))
    if n < MIN_WINDOW:
        first = usable[0]["step"] if usable else from_step
        last = usable[-1]["step"] if usable else from_step
        why = f"{n} row(s) of the guide's parameters logged, {MIN_WINDOW} needed to judge"
        return Drift(False, False, math.nan, math.nan, "", n, first, last, why)
    window = usable[-k:]
    half = k // 2
    loc = np.stack([np.asarray(r["loc"], dtype=np.float64) for r in window])
    log_sd = np.log(np.stack([np.asarray(r["sd"], dtype=np.float64) for r in window]) + 1e-300)
    scale = np.exp(log_sd[-half:]).mean(0)  # the late half's sd: the posterior's scale now
    u = loc / scale
    stats = []
    for x in (u, log_sd):
        move = x[-half:].mean(0) - x[:half].mean(0)
        se = _noise(x) * math.sqrt(2 / half)
        stats.append((np.abs(move), se))
    z = NormalDist().inv_cdf(1 - ALPHA / (2 * 2 * loc.shape[1]))
    moving = np.zeros(loc.shape[1], dtype=bool)
    unsettled = np.zeros(loc.shape[1], dtype=bool)
    for (move, se), tau in zip(stats, (TAU, TAU_SD), strict=True):
        moving |= (move > z * se) & (move > tau)
        within_noise = (move <= z * se) & (z * se <= NOISY * tau)
        unsettled |= (move > tau) & ~within_noise
    (loc_move, _), (sd_move, _) = stats
    settled = not bool(unsettled.any())
    names = list(names) if names is not None and len(names) == loc.shape[1] else None
    j_loc, j_sd = int(loc_move.argmax()), int(sd_move.argmax())
    by_loc = loc_move[j_loc] / TAU >= sd_move[j_sd] / TAU_SD
    j = j_loc if by_loc else j_sd
    worst = names[j] if names else f"coordinate {j}"
    t0, t1 = int(window[0]["step"]), int(window[-1]["step"])
    if by_loc:
        what = f"the location of {worst} moved {loc_move[j]:.2f} posterior sd"
    else:
        what = f"the sd of {worst} changed by {100 * math.expm1(sd_move[j]):.0f} %"
    bound = f"settled: at most {TAU} sd, {100 * math.expm1(TAU_SD):.0f} %"
    reason = f"{what} over steps {t0}-{t1} ({bound})"
    return Drift(
        settled,
        not bool(moving.any()),
        float(loc_move.max()),
        float(sd_move.max()),
        worst,
        k,
        t0,
        t1,
        reason,
    )
