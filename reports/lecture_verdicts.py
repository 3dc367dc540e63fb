"""The verdicts of the tour's lecture-claim sections (:mod:`bayesdl.reports.tour_lecture`).

Each reads the numbers its section put in ``ctx.record`` and the convergence of the fits it
made (:data:`bayesdl.reports.lecture_kit.FITS`), and checks the claim with the tolerance the
section's own text states:

* sequential updating: the closed-form chain ends exactly at the all-at-once posterior; the
  fitted chain's mean within :data:`~bayesdl.reports.compare.MEAN_LIMIT` exact sd of it, its
  sd within :data:`~bayesdl.reports.compare.SD_RANGE` (``bayesdl compare``'s rule);
* posterior collapse: the exact sds' log-log slope within 0.05 of -1/2; fitted sds within
  10 % of the exact ones (the text's tolerance);
* data per parameter: the test NLLs of BNN, MAP and MLE closer at the largest N than at the
  smallest (the gap shrinks as data per parameter grows);
* KL = log p(D) - ELBO: the closed-form gap equals the exact KL (to 1e-6 nats), the Monte
  Carlo gap within 3 standard errors of it;
* single network: one draw's accuracy, and the mean network's, within 0.05 of 50 draws'.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

from bayesdl.reports.compare import MEAN_LIMIT, SD_RANGE
from bayesdl.reports.lecture_kit import Context
from bayesdl.reports.verdict import Verdict, fits_converged, within

Check = tuple[str, float, float, float]
Fits = Sequence[tuple[str, bool | None]]


def _verdict(fits: Fits, checks: list[Check], what: str = "claim checks hold") -> Verdict:
    converged, text = fits_converged(fits)
    agrees, agreement = within(checks, what)
    return Verdict(converged, text, agrees=agrees, agreement=agreement)


def sequential(record: dict[str, Any], fits: Fits) -> Verdict:
    """Exact chain end == all at once; the fitted chain near it (see the module docstring)."""
    r = record["sequential"]
    end, at_once = r["exact"][-1], r["at_once"]
    gap = abs(end[0] - at_once[0]) + abs(end[1] - at_once[1])
    return _verdict(fits, [
        ("closed form: |Beta parameters, sequential - all at once|", gap, 0.0, 1e-9),
        ("fitted chain: mean shift / exact sd", r["mean_shift_sd"], 0.0, MEAN_LIMIT),
        ("fitted chain: sd / exact sd", r["sd_ratio"], *SD_RANGE),
    ])  # fmt: skip


def collapse(record: dict[str, Any], fits: Fits) -> Verdict:
    """Slopes of -1/2; fitted sds within 10 % (see the module docstring)."""
    r = record["collapse"]
    checks = [
        ("coin exact sd log-log slope", r["coin_slope"], -0.55, -0.45),
        ("linreg exact sd log-log slope", r["linreg_slope"], -0.55, -0.45),
    ]
    for row in r["fits"]:
        checks.append((f"coin N = {row[0]}: fitted / exact sd", row[2] / row[1], 0.9, 1.1))
        checks.append((f"linreg N = {row[0]}: fitted / exact sd", row[5] / row[4], 0.9, 1.1))
    return _verdict(fits, checks)


def data_per_parameter(record: dict[str, Any], fits: Fits) -> Verdict:
    """The three methods' NLL gap smaller at the largest N (see the module docstring)."""
    rows = record["data_per_parameter"]
    gap = lambda r: max(r[5:8]) - min(r[5:8])  # noqa: E731
    first, last = rows[0], rows[-1]
    ratio = gap(last) / gap(first) if gap(first) > 0 else math.inf
    return _verdict(fits, [(f"NLL gap at N = {last[0]} / at N = {first[0]}", ratio, 0.0, 1.0)])


def elbo_kl(record: dict[str, Any], fits: Fits) -> Verdict:
    """Closed-form gap == KL; Monte Carlo gap within 3 s.e. (see the module docstring)."""
    checks = []
    for model, rows in record["elbo_kl"].items():
        for r in rows:
            name = f"{model} {r[0].split(':')[0]}"
            checks.append((f"{name}: closed-form gap - KL", r[5] - r[4], -1e-6, 1e-6))
            checks.append((f"{name}: z", r[7], -3.0, 3.0))
    return _verdict(fits, checks)


def ensemble(record: dict[str, Any], fits: Fits) -> Verdict:
    """One draw and the mean network within 0.05 accuracy of 50 draws (module docstring)."""
    stats, mean = record["ensemble"]["stats"], record["ensemble"]["mean_network"]
    top = stats[max(stats)][0]
    return _verdict(fits, [
        (f"accuracy, 1 draw - {max(stats)} draws", stats[min(stats)][0] - top, -0.05, 0.05),
        (f"accuracy, mean network - {max(stats)} draws", mean[0] - top, -0.05, 0.05),
    ])  # fmt: skip


#: the verdict of each section, by its name in :data:`bayesdl.reports.tour_lecture.SECTIONS`
VERDICTS: dict[str, Callable[[dict[str, Any], Fits], Verdict]] = {
    "sequential updating": sequential,
    "posterior collapse": collapse,
    "data per parameter": data_per_parameter,
    "KL = log p(D) - ELBO": elbo_kl,
    "single network": ensemble,
}


def judged(name: str, make: Callable, out: Any, ctx: Context) -> tuple[str, Verdict]:
    """``make(out, ctx)``'s HTML and its verdict; the fits it made are counted (a section that
    reuses another's fits, the ensemble's, counts those)."""
    from bayesdl.reports.lecture_kit import FITS

    seen: list[tuple[str, bool | None]] = []
    token = FITS.set(seen)
    try:
        html = make(out, ctx)
    finally:
        FITS.reset(token)
    if not seen and name == "single network":
        seen = [(f"bnn N = {n}", post.converged) for n, post in ctx.fits.items()]
    return html, VERDICTS[name](ctx.record, seen)
