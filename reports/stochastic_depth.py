"""The stochastic-depth network's report: the depth used on the test set under the early-exit
and the joint-mode rules, the shallowest and deepest test inputs by ``q(z | x)``; the tour's
rows (accuracy and mean depth of every rule, the fraction of blocks skipped)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from bayesdl.workflows.base import Problem
from bayesdl.workflows.figures import plt, save
from bayesdl.workflows.stochastic_depth import StochasticDepth


def figures(workflow: StochasticDepth, problem: Problem, out: Path) -> list[str]:
    if workflow.model_options.fixed_depth:
        return []
    x, y = problem.extra["x_test"], problem.extra["y_test"]
    dev = next(problem.model.net.parameters()).device
    rules = workflow.rules(problem, x.to(dev), y.to(dev))
    L = workflow.model_options.blocks
    fig, ax = plt.subplots(figsize=(6, 3.4))
    width = 0.4
    for i, (rule, label) in enumerate(
        (("early_exit_q_mode", "mode of q(z | x)"), ("joint_mode", "mode of p(y, z | x)"))
    ):
        hist = rules[rule]["depth_histogram"]
        ax.bar(
            np.arange(1, L + 1) + (i - 0.5) * width,
            hist,
            width,
            label=f"{label}: acc {rules[rule]['accuracy']:.3f}, "
            f"mean {rules[rule]['mean_depth']:.2f}",
        )
    ax.set_xlabel("depth z (blocks run)")
    ax.set_ylabel("test inputs")
    ax.set_title(
        f"depth used on the test set (penalty {workflow.model_options.depth_penalty:g} nats/block)"
    )
    ax.legend(fontsize=8)
    names = [save(fig, out, "stochastic_depth_histogram.png")]

    shape = problem.extra["image_shape"]
    if shape is not None:
        depth = rules["early_exit_q_mode"]["depth_histogram"]
        d = workflow._q_depth(problem, x.to(dev)).cpu()
        order = torch.argsort(d, stable=True)
        n = min(8, len(order) // 2)
        fig, axes = plt.subplots(2, n, figsize=(1.3 * n, 3.2))
        for row, idx in enumerate((order[:n], order.flip(0)[:n])):
            for j, i in enumerate(idx.tolist()):
                ax = axes[row, j]
                ax.imshow(x[i].reshape(shape).numpy(), cmap="gray_r")
                ax.set_title(f"y={int(y[i])} z={int(d[i])}", fontsize=7)
                ax.axis("off")
        fig.suptitle(
            f"shallowest (top) and deepest (bottom) test inputs by q(z | x); histogram {depth}",
            fontsize=8,
        )
        names.append(save(fig, out, "stochastic_depth_examples.png"))
    return names


def comparison(workflow: StochasticDepth, summary: dict[str, Any]) -> list[tuple]:
    t = summary["test"]
    rows = [(f"test accuracy: {r}", None, t[r]["accuracy"]) for r in t]
    rows += [
        (
            f"mean depth: {r} (reference: all blocks)",
            summary["blocks"],
            t[r]["mean_depth"],
            "bound",
            (1, summary["blocks"]),
        )
        for r in t
        if "depth_histogram" in t[r]
    ]
    rows.append(
        (
            "fraction of blocks skipped (early exit; reference: full depth)",
            0.0,
            t["early_exit_q_mode"]["fraction_skipped"],
            "baseline",
        )
    )
    return rows
