"""The rank histograms of simulation-based calibration, as Talts et al. (2018) draw them: per
scalar element, the replications' ranks in ``B`` bins over ``0..L``, the count uniform ranks
expect (``R p_b``, the line) and the band of 99 % of such counts (Binomial(R, p_b), shaded).
A bar outside the band at both ends is a U (the posterior too narrow), a hump in the middle a
posterior too wide, a slope a biased one."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from bayesdl.inference import ranks as stats
from bayesdl.workflows.figures import plt, save

#: panels drawn (failing elements first, then the others in order)
MAX_PANELS = 24


class RankedResult(Protocol):
    """What the histograms read of an SBC result (:class:`bayesdl.reports.sbc_report.SBCResult`
    is one): every element's test, the verdict, the settings (``num_draws``, ``model``,
    ``method``, ``guide``) and the replications whose fit succeeded."""

    tests: list[stats.RankTest]
    verdict: str
    settings: dict[str, Any]

    def ranked(self) -> list[dict[str, Any]]: ...


def short_name(model: str) -> str:
    """``/a/b/model.py:fn`` -> ``model.py:fn``; ``python:fn`` -> ``fn``."""
    path, _, fn = model.rpartition(":")
    if path == "python":
        return fn
    return f"{Path(path).name}:{fn}" if path else model


def rank_histograms(result: RankedResult, path: Path) -> Path:
    """Draw the histograms of ``result`` 's elements into the PNG ``path``."""
    tests = sorted(result.tests, key=lambda t: not t.fails)[:MAX_PANELS]
    replications, num_draws = len(result.ranked()), result.settings["num_draws"]
    bins = stats.num_bins(replications, num_draws)
    shares = stats.bin_shares(num_draws, bins)
    band = stats.binomial_band(replications, shares)
    edges = np.arange(bins + 1) * (num_draws + 1) / bins
    cols = min(4, max(1, len(tests)))
    rows = max(1, math.ceil(len(tests) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(3.1 * cols, 2.3 * rows + 0.5), squeeze=False)
    for ax, t in zip(axes.flat, tests, strict=False):
        ax.fill_between(
            edges, np.append(band[:, 0], band[-1, 0]), np.append(band[:, 1], band[-1, 1]),
            step="post", color="0.85", label="99 % of uniform",
        )  # fmt: skip
        expected = replications * shares
        ax.step(edges, np.append(expected, expected[-1]), where="post", color="0.3", lw=1)
        ax.bar(
            edges[:-1], t.counts, width=edges[1] - edges[0], align="edge",
            color="#c0392b" if t.fails else "#2e86c1", alpha=0.85, edgecolor="white",
        )  # fmt: skip
        shape = t.shape.split(":")[0] if t.shape else ("not uniform" if t.fails else "")
        title = f"{t.label}  p={t.p_adjusted:.2g}" + (f"\n{shape}" if shape else "")
        ax.set_title(title, fontsize=9)
        ax.set_xlim(0, num_draws + 1)
        ax.tick_params(labelsize=7)
    for ax in list(axes.flat)[len(tests) :]:
        ax.axis("off")
    for ax in axes[-1]:
        ax.set_xlabel(f"rank of the truth among L = {num_draws} draws", fontsize=8)
    more = len(result.tests) - len(tests)
    fig.suptitle(
        f"SBC of {short_name(result.settings['model'])}: {result.verdict} "
        f"({replications} replications, {result.settings['method']}"
        + (f", guide {result.settings['guide']}" if result.settings["method"] == "vi" else "")
        + ")"
        + (f"; {more} more elements in sbc.json" if more > 0 else ""),
        fontsize=10,
    )
    save(fig, path.parent, path.name)
    return path
