"""The M2 semi-supervised VAE's report: the training objective per example and the class
figure ``E[x | y, z]`` (``SSVAE._class_figure``, which `bayesdl sample` shares); the tour's rows
(test accuracy of M2 beside the classifier on the labels alone, Kingma et al.'s error on MNIST)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bayesdl.fits import records as run_files
from bayesdl.workflows.base import Problem
from bayesdl.workflows.figures import plt, save
from bayesdl.workflows.ss_vae import SSVAE

#: Kingma et al. 2014, table 1: MNIST test error (%) of M2 by number of labels
PAPER_M2_ERROR = {100: 11.97, 600: 4.94, 1000: 3.60, 3000: 3.92}


def figures(workflow: SSVAE, problem: Problem, out: Path) -> list[str]:
    names = []
    rows = run_files.metric_rows(Path(out) / "metrics.jsonl")
    if rows:
        n = len(problem.data["x"]) + len(problem.data["x_sup"])
        fig, ax = plt.subplots(figsize=(5.5, 3.4))
        ax.plot([r["step"] for r in rows], [r["elbo"] / n for r in rows])
        ax.set_xlabel("step")
        ax.set_ylabel("training objective (nats / example)")
        ax.set_title("ss-vae: ELBO + alpha log q(y|x)")
        names.append(save(fig, out, "ss_vae_objective.png"))
    return names + [workflow._class_figure(problem, out)]


def comparison(workflow: SSVAE, summary: dict[str, Any]) -> list[tuple]:
    t = summary["test"]
    n_sup = summary["data"]["n_labelled"]
    rows: list[tuple[str, Any, Any]] = [
        (
            f"test accuracy, {n_sup} labels: classifier on the labels alone / M2",
            t["baseline_accuracy"],
            t["accuracy"],
            "baseline",
            (t["baseline_accuracy"], 1.0),  # M2's claim: the unlabelled digits help
        )
    ]
    if summary["data"]["source"] == "mnist" and n_sup in PAPER_M2_ERROR:
        paper = PAPER_M2_ERROR[n_sup]
        rows.append(
            ("test error %: Kingma et al. 2014 M2 / ours", paper, t["error_percent"], "paper")
        )
    return rows
