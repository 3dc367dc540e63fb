"""Bayesian linear regression's report: the coefficients' exact and fitted posteriors (mean
+- 2 sd), the predictive band of a one-feature fit beside the exact one; the tour's rows (KL to
the exact posterior, the first coefficients' moments, the test log-likelihood)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

import bayesdl.models.linear_regression as linreg
from bayesdl.reports.compare import MEAN_LIMIT, SD_RANGE
from bayesdl.workflows.base import Problem
from bayesdl.workflows.figures import plt, save
from bayesdl.workflows.linear_regression import LinearRegression


def figures(workflow: LinearRegression, problem: Problem, out: Path) -> list[str]:
    mu, cov = problem.extra["mu_N"], problem.extra["Sigma_N"]
    loc, qcov = workflow._fitted(problem)
    d = mu.numel()
    fig, ax = plt.subplots(figsize=(max(5, 0.6 * d + 2), 3.5))
    i = np.arange(d)
    ax.errorbar(
        i - 0.12, mu, 2 * cov.diagonal().sqrt(), fmt="o", capsize=3, label="exact posterior"
    )
    ax.errorbar(
        i + 0.12,
        loc,
        2 * qcov.diagonal().sqrt(),
        fmt="s",
        capsize=3,
        color="C3",
        label=f"fitted ({workflow.settings.guide})",
    )
    ax.set_xticks(i, [f"theta_{k}" for k in i], rotation=45 if d > 6 else 0)
    ax.set_ylabel("mean +- 2 std")
    ax.set_title("posterior over coefficients")
    ax.legend(fontsize=8)
    names = [save(fig, out, "linreg_coefficients.png")]
    if d == 1:
        x, y = problem.data["x"].cpu(), problem.data["y"].cpu()
        grid = torch.linspace(float(x.min()) - 4, float(x.max()) + 4, 200)[:, None]
        fig, ax = plt.subplots(figsize=(6, 3.8))
        ax.scatter(x[:, 0], y, s=12, color="k", label="train")
        xt, yt = problem.extra["x_test"], problem.extra["y_test"]
        if len(xt):
            ax.scatter(xt[:, 0], yt, s=14, facecolors="none", edgecolors="grey", label="test")
        for (m, c), label, color, ls in (
            ((mu, cov), "exact", "C0", "-"),
            ((loc, qcov), "fitted", "C3", "--"),
        ):
            p = linreg.predictive(grid, m, c, workflow.model_options.noise_scale)
            ax.plot(grid[:, 0], p.mean, color=color, ls=ls, label=f"{label} predictive mean")
            ax.fill_between(
                grid[:, 0],
                p.mean - 1.96 * p.stddev,
                p.mean + 1.96 * p.stddev,
                color=color,
                alpha=0.15,
                label=f"{label} 95% band",
            )
        ax.set_xlabel("x")
        ax.set_ylabel("y")
        ax.set_title("predictive: the band widens away from the data (no intercept)")
        ax.legend(fontsize=7)
        names.append(save(fig, out, "linreg_predictive.png"))
    return names


def comparison(workflow: LinearRegression, summary: dict[str, Any]) -> list[tuple]:
    """Rows ``(quantity, reference, fitted, kind, accepted)``: the first coefficients' exact
    moments (a mean accepted within :data:`~bayesdl.reports.compare.MEAN_LIMIT` exact sd; an
    sd within :data:`~bayesdl.reports.compare.SD_RANGE` of the exact one, or for the
    mean-field guide of its family's best, ``1 / sqrt(Lambda_kk)``: the exact sd is then shown,
    not judged), the ideals (KL 0, no mean error) and the test log-likelihood."""
    e, f, t = summary["exact_posterior"], summary["fitted"], summary["test_loglik"]
    optimum = summary.get("mean_field_optimum_std")
    mean_field = workflow.settings.guide == "mean-field" and optimum is not None
    rows: list[tuple] = [
        ("KL(q || exact)", 0.0, f["kl_to_exact"], "ideal"),
        ("max |mean error|", 0.0, f["max_abs_mean_error"], "ideal"),
    ]
    for k in range(min(4, len(e["mean"]))):
        m, sd = e["mean"][k], e["std"][k]
        rows.append((f"theta_{k} mean", m, f["mean"][k], "exact",
                     (m - MEAN_LIMIT * sd, m + MEAN_LIMIT * sd)))  # fmt: skip
        sd_range = tuple(r * sd for r in SD_RANGE)
        rows.append((f"theta_{k} std", sd, f["std"][k], "exact", None if mean_field else sd_range))
        if mean_field:
            best = optimum[k]
            rows.append((f"theta_{k} std: best mean-field, 1/sqrt(Lambda_kk)", best, f["std"][k],
                         "exact", tuple(r * best for r in SD_RANGE)))  # fmt: skip
    rows.append(("test log-lik per point", t["exact"], t["fitted"], "exact"))
    return rows
