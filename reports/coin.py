"""The coin's report: the prior, the exact Beta posterior and the fitted q (or the MAP / MLE
point) in one figure, the predictive probability of heads under full Bayes, MAP and MLE in
another; the tour's rows (posterior moments and KL to the exact posterior, the predictives)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch.distributions import Beta

from bayesdl.reports.compare import MEAN_LIMIT, SD_RANGE
from bayesdl.workflows.base import Problem
from bayesdl.workflows.coin import Coin
from bayesdl.workflows.figures import plt, save


def figures(workflow: Coin, problem: Problem, out: Path) -> list[str]:
    s = workflow.summarize(problem)
    a, b = s["prior"]["a"], s["prior"]["b"]
    grid = torch.linspace(1e-3, 1 - 1e-3, 400)
    fig, ax = plt.subplots(figsize=(6, 3.6))
    ax.plot(
        grid,
        Beta(a, b).log_prob(grid).exp(),
        "--",
        color="grey",
        label=f"prior Beta({a:g}, {b:g})",
    )
    pa, pb = s["exact_posterior"]["a"], s["exact_posterior"]["b"]
    ax.plot(
        grid,
        Beta(pa, pb).log_prob(grid).exp(),
        lw=2.5,
        label=f"exact posterior Beta({pa:g}, {pb:g})",
    )
    f = s["fitted"]
    if "a_q" in f:
        ax.plot(
            grid,
            Beta(f["a_q"], f["b_q"]).log_prob(grid).exp(),
            ":",
            lw=2.5,
            color="C3",
            label=f"fitted q = Beta({f['a_q']:.2f}, {f['b_q']:.2f})",
        )
    else:
        ax.axvline(
            f["pi_hat"],
            color="C3",
            ls=":",
            lw=2.5,
            label=f"{workflow.settings.guide.upper()} = {f['pi_hat']:.3f}",
        )
    ax.set_xlabel("pi = P(heads)")
    ax.set_ylabel("density")
    ax.set_title(f"coin: {s['data']['heads']} heads, {s['data']['tails']} tails")
    ax.legend(fontsize=8)
    names = [save(fig, out, "coin_posterior.png")]

    p = s["predictive_exact"]
    fig, ax = plt.subplots(figsize=(5, 3.2))
    labels = ["full Bayes", "MAP", "MLE"]
    vals = [p["bayes"], p["map"], p["mle"]]
    bars = ax.bar(labels, [0 if v != v else v for v in vals], color=["C0", "C1", "C2"])
    for bar, v in zip(bars, vals, strict=True):
        ax.text(
            bar.get_x() + bar.get_width() / 2,
            (v if v == v else 0) + 0.02,
            "n/a" if v != v else f"{v:.3f}",
            ha="center",
        )
    ax.set_ylim(0, 1.1)
    ax.set_ylabel("P(next flip = heads)")
    # two short lines: a title wider than the figure is cut at the image's edge
    ax.set_title("posterior predictive:\npoint estimates are over-confident", fontsize=10)
    names.append(save(fig, out, "coin_predictive.png"))
    return names


def comparison(workflow: Coin, summary: dict[str, Any]) -> list[tuple]:
    """Rows ``(quantity, reference, fitted, kind, accepted)``: the exact posterior's moments
    and predictives (accepted: a mean within :data:`~bayesdl.reports.compare.MEAN_LIMIT` exact
    sd, an sd within :data:`~bayesdl.reports.compare.SD_RANGE` of the exact one, as
    ``bayesdl compare`` flags them), the KL's ideal 0 (shown, not judged)."""
    e, f, p = summary["exact_posterior"], summary["fitted"], summary["predictive_exact"]
    tol = MEAN_LIMIT * e["std"]
    near = lambda v: (v - tol, v + tol)  # noqa: E731
    rows: list[tuple] = []
    if "mean" in f:
        rows += [
            ("posterior mean", e["mean"], f["mean"], "exact", near(e["mean"])),
            ("posterior std", e["std"], f["std"], "exact", tuple(r * e["std"] for r in SD_RANGE)),
            ("KL(q || exact)", 0.0, f["kl_to_exact"], "ideal"),
        ]
    guide = workflow.settings.guide
    for label, key, fitted in (
        ("full Bayes", "bayes", f["predictive"] if "mean" in f else None),
        ("MAP", "map", f["predictive"] if guide == "map" else None),
        ("MLE", "mle", f["predictive"] if guide == "mle" else None),
    ):
        accepted = near(p[key]) if fitted is not None and p[key] == p[key] else None
        rows.append((f"P(next = 1): {label}", p[key], fitted, "exact", accepted))
    return rows
