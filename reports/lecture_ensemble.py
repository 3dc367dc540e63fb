"""The tour's section on "single network (single-sample ensemble) also works": a mean-field
BNN's accuracy, NLL and cost against the number M of posterior draws in its predictive, beside
the one network at the posterior means (:func:`bayesdl.bnn.mean_net`)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bayesdl.reports import page as report
from bayesdl.reports.lecture_data_per_parameter import BNN_SIZES, fit_digits
from bayesdl.reports.lecture_kit import Context, section
from bayesdl.workflows import metrics
from bayesdl.workflows.figures import plt, save

FIGURE = "ensemble.png"
ENSEMBLE_SIZES = (1, 2, 5, 10, 50)


def draw_scores(post, split, repeats: int) -> tuple[list[list], dict[int, tuple]]:
    """Per M of :data:`ENSEMBLE_SIZES`: accuracy and NLL (mean, sd over ``repeats``) and the
    median milliseconds of ``post.predict(..., num_samples=M)``."""
    rows, stats = [], {}
    for m in ENSEMBLE_SIZES:
        acc, nll, ms = [], [], []
        for _ in range(repeats):
            start = time.perf_counter()
            f = post.predict({"x": split.x_test}, num_samples=m)["f"]
            ms.append(1000 * (time.perf_counter() - start))
            p = f.softmax(-1)
            acc.append(metrics.accuracy(p, split.y_test))
            nll.append(metrics.nll(p, split.y_test))
        stats[m] = (np.mean(acc), np.std(acc), np.mean(nll), np.std(nll), np.median(ms))
        rows.append([f"{m} draw{'s' if m > 1 else ''}", *stats[m]])
    return rows, stats


def mean_network_scores(post, split, repeats: int) -> tuple[float, float, float]:
    """Accuracy, NLL and mean milliseconds of one pass of the network at the posterior means."""
    import bayesdl.bnn as bnn

    net = bnn.mean_net(post)
    with torch.no_grad():
        start = time.perf_counter()
        for _ in range(repeats):
            logits = net(split.x_test)
        mean_ms = 1000 * (time.perf_counter() - start) / repeats
    p = logits.softmax(-1)
    return metrics.accuracy(p, split.y_test), metrics.nll(p, split.y_test), mean_ms


def draw(out: Path, n: int, stats: dict[int, tuple], mean: tuple[float, float, float]) -> Path:
    """Accuracy, NLL and time against M, the mean network as a line."""
    mean_acc, mean_nll, mean_ms = mean
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    ms_ = list(ENSEMBLE_SIZES)
    for ax, (j, what) in zip(axes, ((0, "test accuracy"), (2, "test NLL (nats)"),
                                    (4, "ms per predict (450 digits)")), strict=True):  # fmt: skip
        vals = [stats[m][j] for m in ms_]
        err = [stats[m][j + 1] for m in ms_] if j < 4 else None
        ax.errorbar(ms_, vals, yerr=err, fmt="-o", capsize=3, label="BNN, M posterior draws")
        ref = (mean_acc, None, mean_nll, None, mean_ms)[j]
        ax.axhline(ref, color="C3", ls="--", label="mean network")
        ax.set_xscale("log")
        ax.set_xlabel("M (draws in the predictive)")
        ax.set_ylabel(what)
        ax.legend(fontsize=7)
    fig.suptitle(f"mean-field BNN on {n} digits: ensemble size vs quality and cost", fontsize=10)
    save(fig, out, FIGURE)
    return out / FIGURE


def _text(n: int, repeats: int, stats: dict[int, tuple], mean: tuple[float, float, float]) -> str:
    mean_acc, mean_nll, mean_ms = mean
    s1, s50 = stats[1], stats[max(ENSEMBLE_SIZES)]
    return (
        f"One mean-field BNN (64-100-10, fitted on {n} training digits) predicts the 450 "
        'test digits with <code>post.predict({"x": x}, num_samples=M)</code>, '
        f"{repeats} times per M (mean ± sd over repeats; time: median). One draw: accuracy "
        f"{s1[0]:.3f}, NLL {s1[2]:.3f}, {s1[4]:.1f} ms; {max(ENSEMBLE_SIZES)} draws: "
        f"{s50[0]:.3f}, {s50[2]:.3f}, {s50[4]:.1f} ms ({s50[4] / s1[4]:.1f} times the cost). "
        f"The network at the posterior means (<code>bayesdl.bnn.mean_net(post)</code>), one "
        f"plain forward pass: {mean_acc:.3f}, {mean_nll:.3f}, {mean_ms:.2f} ms. "
        + (
            "A single network works here: the mean network is at least as good as the "
            f"{max(ENSEMBLE_SIZES)}-draw ensemble at a fraction of its cost; a single random "
            f"draw scores accuracy {s1[0]:.3f} against the ensemble's {s50[0]:.3f}."
            if mean_nll <= s50[2]
            else f"Here the {max(ENSEMBLE_SIZES)}-draw ensemble beats the mean network's NLL."
        )
    )


def _posterior(ctx: Context) -> tuple[int, Any, Any]:
    """The BNN on the most digits (the data-per-parameter section's, else fitted here)."""
    n = max(ctx.fits, default=max(BNN_SIZES))
    post = ctx.fits.get(n)
    split = None
    if post is None:
        post, split = fit_digits(n, "meanfield", 20 if ctx.quick else 600)
    if split is None:
        from bayesdl.datasets.bundled import digits

        split = digits()
    return n, post, split


def ensemble_section(out: Path, ctx: Context) -> str:
    """Accuracy, NLL and cost of the BNN predictive against the number of posterior draws."""
    t0 = time.perf_counter()
    n, post, split = _posterior(ctx)
    repeats = 2 if ctx.quick else 10
    rows, stats = draw_scores(post, split, repeats)
    mean = mean_network_scores(post, split, repeats)
    rows.append(["mean network (posterior means, one pass)", mean[0], 0.0, mean[1], 0.0,
                 mean[2]])  # fmt: skip
    fig_path = draw(out, n, stats, mean)
    ctx.record["ensemble"] = {"stats": stats, "mean_network": mean}
    table = report.table(["predictive", "accuracy", "sd", "NLL", "sd", "ms (median)"], rows)
    return section(
        "Lecture claims: a single network also works (BNN ensemble size)",
        "Actually using the ensemble is costly: k times slow for an ensemble of k models. "
        "Single network (single-sample ensemble) also work",
        _text(n, repeats, stats, mean),
        fig_path,
        [table],
        t0,
    )
