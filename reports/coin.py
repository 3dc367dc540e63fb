"""The coin's report: the prior, the exact Beta posterior and the fitted q (or the MAP / MLE
point) in one figure, the predictive probability of heads under full Bayes, MAP and MLE in
another; the tour's rows (posterior moments and KL to the exact posterior, the predictives)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch.distributions import Beta

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
    ax.set_title("posterior predictive: point estimates are over-confident")
    names.append(save(fig, out, "coin_predictive.png"))
    return names


def comparison(workflow: Coin, summary: dict[str, Any]) -> list[tuple[str, Any, Any]]:
    e, f, p = summary["exact_posterior"], summary["fitted"], summary["predictive_exact"]
    rows = []
    if "mean" in f:
        rows += [
            ("posterior mean", e["mean"], f["mean"]),
            ("posterior std", e["std"], f["std"]),
            ("KL(q || exact)", 0.0, f["kl_to_exact"]),
        ]
    rows += [
        ("P(next = 1): full Bayes", p["bayes"], f["predictive"] if "mean" in f else None),
        (
            "P(next = 1): MAP",
            p["map"],
            f["predictive"] if workflow.settings.guide == "map" else None,
        ),
        (
            "P(next = 1): MLE",
            p["mle"],
            f["predictive"] if workflow.settings.guide == "mle" else None,
        ),
    ]
    return rows
