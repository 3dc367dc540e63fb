"""The VAE's report: the learning curve (training ELBO per example), samples,
reconstructions and, for a 2-d latent, the test codes and the decoded manifold
(``VAE._draw``, which `bayesdl sample` shares); the tour's rows (test ELBO and importance-weighted
log p(x) against the untrained network, Burda et al.'s number on MNIST)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from bayesdl.fits import records as run_files
from bayesdl.workflows.base import Problem
from bayesdl.workflows.figures import plt, save
from bayesdl.workflows.vae import VAE

#: Burda et al. 2016, table 1: VAE 784-200-200-50, dynamically binarized MNIST, -log p(x), k=5000
BURDA_VAE_NLL = 86.76


def figures(workflow: VAE, problem: Problem, out: Path) -> list[str]:
    names = []
    rows = run_files.metric_rows(Path(out) / "metrics.jsonl")
    if rows:
        n = len(problem.data["x"])
        fig, ax = plt.subplots(figsize=(5.5, 3.4))
        ax.plot([r["step"] for r in rows], [r["elbo"] / n for r in rows])
        ax.set_xlabel("step")
        ax.set_ylabel("training ELBO (nats / example)")
        ax.set_title("vae: learning curve")
        names.append(save(fig, out, "vae_elbo.png"))
    drawn, _ = workflow._draw(problem, out, workflow.engine.seed)
    return names + drawn


def comparison(workflow: VAE, summary: dict[str, Any]) -> list[tuple]:
    t, u, k = summary["test"], summary["untrained"], summary["test"]["iw_samples"]
    rows: list[tuple[str, Any, Any]] = [
        # accepted: trained beats untrained; the importance-sampled log p(x) is no lower
        # than the ELBO it tightens (Burda et al. 2016)
        (
            "test ELBO, nats/example (reference: untrained)",
            u["elbo"],
            t["elbo"],
            "baseline",
            (u["elbo"], math.inf),
        ),
        (
            f"test log p(x), IW K={k} (reference: untrained)",
            u["log_px"],
            t["log_px"],
            "baseline",
            (u["log_px"], math.inf),
        ),
        ("gap log p(x) - ELBO (>= 0)", 0.0, t["log_px"] - t["elbo"], "bound", (0.0, math.inf)),
    ]
    if summary["data"]["source"] == "mnist" and summary.get("binarize") == "dynamic":
        rows.append(
            (
                f"test -log p(x): Burda et al. (K=5000, 3280 epochs) / ours (K={k})",
                BURDA_VAE_NLL,
                -t["log_px"],
                "paper",
            )
        )
    return rows
