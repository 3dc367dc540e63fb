"""The tour's section on "in the limit of infinite data the posterior collapses into a point":
the exact posterior sd of the coin and of linear regression against N (the ``1 / sqrt(N)`` rate,
``sqrt(pi (1 - pi) / N)`` and ``sigma / sqrt(N Var x)``), fitted guides at a few N, the MLE, MAP
and Bayes predictives converging, and the point estimates' over-confidence at small N (the
expected log loss of the next flip, exact over all datasets of N flips)."""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

import bayesdl.models.linear_regression as linreg
from bayesdl.reports import lecture_math as lm
from bayesdl.reports import page as report
from bayesdl.reports.lecture_kit import (
    PI_TRUE,
    Context,
    csv,
    quiet_fit,
    section,
    simulated_flips,
    summary_of,
)
from bayesdl.workflows.figures import plt, save

FIGURE = "asymptotics.png"
FIT_NS = (10, 100, 1000)  # the section fits coin and linreg at these N
RUN_DIRS = tuple(f"linreg-n{n}" for n in FIT_NS)
LOSS_NS = [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000]
PRIOR_A, PRIOR_B = 2.0, 2.0  # the prior of the predictives compared


def _linreg_data(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``x ~ U(-3, 3)^2``, ``theta* = (0.8, -0.5)``, ``y = x theta* + N(0, 1)``."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 2, generator=g, dtype=torch.float64) * 6 - 3
    y = x @ torch.tensor([0.8, -0.5], dtype=torch.float64) + torch.randn(
        n, generator=g, dtype=torch.float64
    )
    return x, y


def linreg_sd(x: torch.Tensor, y: torch.Tensor) -> float:
    """Exact posterior sd of ``theta_0`` (prior N(0, 1), noise sd 1)."""
    _, cov = linreg.posterior(x, y, 0.0, 1.0, 1.0)
    return float(cov[0, 0].sqrt())


def exact_sds(grid: np.ndarray, heads: np.ndarray) -> dict[str, Any]:
    """The exact posterior sds on ``grid`` (coin: prior Beta(1, 1); linreg's ``theta_0``) and
    their log-log slopes."""
    coin_sd = [lm.beta_mean_sd(1 + heads[n], 1 + n - heads[n])[1] for n in grid]
    x_all, y_all = _linreg_data(int(grid.max()), seed=5)
    lin_sd = [linreg_sd(x_all[:n], y_all[:n]) for n in grid]
    return {"coin": coin_sd, "linreg": lin_sd, "coin_slope": lm.loglog_slope(grid, coin_sd),
            "linreg_slope": lm.loglog_slope(grid, lin_sd)}  # fmt: skip


def fit_rows(out: Path, ctx: Context, flips: np.ndarray, heads: np.ndarray, steps: int) -> list:
    """Per N fitted: the coin's and linreg's exact and fitted sds, and their asymptotes."""
    rows = []
    for n in FIT_NS[:1] if ctx.quick else FIT_NS:
        cpost = quiet_fit("coin", flips=csv(flips[:n]), steps=steps, particles=16, seed=0)
        # linreg's fitted sd from its run folder (Posterior.sample of linreg draws one at a time)
        lpost = quiet_fit("linreg", simulate=n, dim=2, test_fraction=0.0, steps=steps, seed=n,
                          out=out / f"linreg-n{n}", overwrite=ctx.overwrite)  # fmt: skip
        xs, ys = lpost.data["x"].double(), lpost.data["y"].double()
        rows.append([
            n,
            lm.beta_mean_sd(1 + heads[n], 1 + n - heads[n])[1],
            cpost.summary(4000)["pi"]["std"],
            math.sqrt(PI_TRUE * (1 - PI_TRUE) / n),
            linreg_sd(xs, ys),
            summary_of(lpost)["fitted"]["std"][0],
            1 / math.sqrt(3 * n),
        ])  # fmt: skip
    return rows


def log_losses(predictors: dict) -> tuple[dict[str, list], list[list]]:
    """The expected log loss of the next flip per predictor and N of :data:`LOSS_NS`, and the
    table's rows (the excess over the truth's entropy; the MLE's chance of an infinite loss)."""
    entropy = lm.bernoulli_entropy(PI_TRUE)
    losses = {k: [lm.coin_expected_log_loss(PI_TRUE, n, p) for n in LOSS_NS]
              for k, p in predictors.items()}  # fmt: skip
    loss_rows = [
        [n, losses["Bayes"][i][0] - entropy, losses["MAP"][i][0] - entropy,
         losses["MLE"][i][1], losses["MLE"][i][0] - entropy if losses["MLE"][i][1] < 1 else None,
         1 / (2 * n)]
        for i, n in enumerate(LOSS_NS)
    ]  # fmt: skip
    return losses, loss_rows


def draw(out: Path, grid, sds, rows, heads, predictors, loss_rows) -> Path:
    """Three panels: sds against N, the predictives against N, the excess log loss."""
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    ax = axes[0]
    coin_slope, lin_slope = sds["coin_slope"], sds["linreg_slope"]
    ax.loglog(grid, sds["coin"], "C0-", label=f"coin, exact (slope {coin_slope:.3f})")
    ax.loglog(grid, np.sqrt(PI_TRUE * (1 - PI_TRUE) / grid), "C0:", label="sqrt(pi*(1-pi*)/N)")
    ax.loglog(grid, sds["linreg"], "C1-", label=f"linreg theta_0, exact (slope {lin_slope:.3f})")
    ax.loglog(grid, 1 / np.sqrt(3 * grid), "C1:", label="sigma / sqrt(N Var x)")
    ax.loglog([r[0] for r in rows], [r[2] for r in rows], "C0o", label="coin, fitted Beta guide")
    ax.loglog([r[0] for r in rows], [r[5] for r in rows], "C1s", label="linreg, fitted guide")
    ax.set_xlabel("N")
    ax.set_ylabel("posterior sd")
    ax.set_title("the posterior collapses at the 1/sqrt(N) rate")
    ax.legend(fontsize=7)
    ax = axes[1]
    seq = np.unique(np.round(np.logspace(0, 4, 60)).astype(int))
    for k, p in predictors.items():
        ax.semilogx(seq, [p(int(heads[n]), int(n - heads[n])) for n in seq], label=k)
    ax.axhline(PI_TRUE, color="grey", ls=":", label="pi*")
    ax.set_xlabel("N flips seen")
    ax.set_ylabel("P(next = heads)")
    ax.set_title(f"predictives converge (prior Beta({PRIOR_A:g}, {PRIOR_B:g}))")
    ax.legend(fontsize=7)
    ax = axes[2]
    ax.loglog(LOSS_NS, [r[1] for r in loss_rows], "C0-o", label="Bayes")
    ax.loglog(LOSS_NS, [r[2] for r in loss_rows], "C1-s", label="MAP")
    mle = [(n, r[4]) for n, r in zip(LOSS_NS, loss_rows, strict=True) if r[4] is not None]
    ax.loglog(*zip(*mle, strict=True), "C2-^", label="MLE, when finite")
    ax.loglog(LOSS_NS, [1 / (2 * n) for n in LOSS_NS], "k:", label="1 / (2N)")
    ax.set_xlabel("N")
    ax.set_ylabel("expected log loss - H(pi*)  (nats)")
    ax.set_title("next-flip log loss in excess of the truth's")
    ax.legend(fontsize=7)
    save(fig, out, FIGURE)
    return out / FIGURE


def _text(steps: int, sds: dict, rows: list, losses: dict, loss_rows: list) -> str:
    """The section's paragraph: the slopes, the fits that are off, the log losses at N = 10."""
    coin_slope, lin_slope = sds["coin_slope"], sds["linreg_slope"]
    i10 = LOSS_NS.index(10)
    off = [f"{model} at N = {r[0]} ({r[j]:.3g} vs {r[j - 1]:.3g})"
           for r in rows for model, j in (("coin", 2), ("linreg", 5))
           if abs(r[j] / r[j - 1] - 1) > 0.1]  # fmt: skip
    return (
        f"Coin with pi* = {PI_TRUE} (prior Beta(1, 1)) and linear regression (2 inputs, "
        "x ~ U(-3, 3), prior N(0, I), noise sd 1) on growing data: the exact posterior sd falls "
        f"with log-log slope {coin_slope:.3f} (coin) and {lin_slope:.3f} (linreg) against "
        "-1/2, onto sqrt(pi*(1 - pi*)/N) and sigma/sqrt(N Var x). The fitted guides "
        f"(<code>bayesdl.fit</code>, {steps} steps, started wide) match the exact sd within 10 % "
        + (
            f"except {', '.join(off)}: there the guide has not yet shrunk onto the sharp "
            "posterior in that many steps (SVI's slow direction, not the claim's). "
            if off
            else "at every N fitted. "
        )
        + "With prior Beta(2, 2) the Bayes, MAP "
        "and MLE predictives converge to pi*. Averaged exactly over all datasets of N flips, the "
        f"excess log loss of the next flip at N = 10 is {loss_rows[i10][1]:.4f} nats (Bayes), "
        f"{loss_rows[i10][2]:.4f} (MAP); the MLE predicts a sure outcome with probability "
        f"{losses['MLE'][i10][1]:.3f} (an infinite loss) and {loss_rows[i10][4]:.4f} otherwise; "
        "all tend to 0 like 1/(2N)."
    )


def asymptotics_section(out: Path, ctx: Context) -> str:
    """Posterior sd vs N (coin and linreg), predictives converging, over-confidence at small N."""
    t0 = time.perf_counter()
    steps = 150 if ctx.quick else 800
    grid = np.unique(np.round(np.logspace(1, 5, 17)).astype(int))
    flips = simulated_flips(int(grid.max()), seed=4)
    heads = np.concatenate([[0], np.cumsum(flips)])
    sds = exact_sds(grid, heads)
    rows = fit_rows(out, ctx, flips, heads, steps)
    predictors = lm.coin_predictors(PRIOR_A, PRIOR_B)
    losses, loss_rows = log_losses(predictors)
    fig_path = draw(out, grid, sds, rows, heads, predictors, loss_rows)
    coin_slope, lin_slope = sds["coin_slope"], sds["linreg_slope"]
    ctx.record["collapse"] = {
        "coin_slope": coin_slope,
        "linreg_slope": lin_slope,
        "fits": rows,
        "log_loss": loss_rows,
    }
    t1 = report.table(
        ["N", "coin exact sd", "coin fitted sd", "sqrt(pi*(1-pi*)/N)", "linreg exact sd theta_0",
         "linreg fitted sd theta_0", "1/sqrt(3N)"],
        rows + [["log-log slope (exact, N = 10..1e5)", coin_slope, None, -0.5, lin_slope, None,
                 -0.5]],
    )  # fmt: skip
    t2 = report.table(
        ["N", "Bayes excess log loss", "MAP excess log loss", "MLE: P(infinite loss)",
         "MLE excess log loss when finite", "1/(2N)"],
        loss_rows,
    )  # fmt: skip
    return section(
        "Lecture claims: with infinite data the posterior collapses into a point",
        "In most cases in the limit of infinite data the true posterior p(theta | D) collapses "
        "into a point ... [the MLE predictive is] overconfident compared to the full Bayesian "
        "but the same in the limit of infinite data",
        _text(steps, sds, rows, losses, loss_rows),
        fig_path,
        [t1, t2],
        t0,
    )
