"""How far apart are two posteriors? ``bayesdl compare RUN_A RUN_B``, ``bayesdl.compare(a, b)``.

For every element of every latent site the two share, from draws of each:
``mean_diff_sd = (mean_A - mean_B) / sd_B`` (the difference of means in units of B's posterior
standard deviation) and ``sd_ratio = sd_A / sd_B``. An element is flagged where
``|mean_diff_sd| > 0.3`` or ``sd_ratio`` is outside ``[0.7, 1.3]``: B is the reference (NUTS,
say) and A the approximation (a VI fit). Monte Carlo error of 2000 draws is about 0.03 in both.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

#: flag where the means differ by more than this many of B's sd
MEAN_LIMIT = 0.3
#: flag where sd_A / sd_B is outside this interval
SD_RANGE = (0.7, 1.3)
#: rows of the printed table (the worst ones when there are more)
TABLE_ROWS = 40
FIGURE = "compare.png"


@dataclass
class Comparison:
    """Per element of each shared latent site: means, sds, ``mean_diff_sd``, ``sd_ratio``,
    ``flagged``; ``names`` label A and B; sites only one side has are listed apart."""

    rows: dict[str, dict[str, Any]]
    names: tuple[str, str] = ("A", "B")
    only_a: list[str] = field(default_factory=list)
    only_b: list[str] = field(default_factory=list)
    draws: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict, repr=False)

    @property
    def flagged(self) -> list[str]:
        """The flagged elements, in site order."""
        return [k for k, r in self.rows.items() if r["flagged"]]

    def to_json(self) -> dict[str, dict[str, Any]]:
        """``{element: {"mean_diff_sd", "sd_ratio", "flagged"}}``."""
        return {
            k: {key: r[key] for key in ("mean_diff_sd", "sd_ratio", "flagged")}
            for k, r in self.rows.items()
        }

    def table(self) -> str:
        """A one-page table (the :data:`TABLE_ROWS` worst elements when there are more)."""
        a, b = self.names
        lo, hi = SD_RANGE
        head = [
            f"A = {a}",
            f"B = {b}",
            f"diff/sd = (mean A - mean B) / sd B; flagged (*) where |diff/sd| > {MEAN_LIMIT} or "
            f"sd A / sd B outside [{lo}, {hi}]",
            f"{'site':<24} {'mean A':>10} {'mean B':>10} {'sd A':>9} {'sd B':>9} "
            f"{'diff/sd':>8} {'sd ratio':>8}",
        ]
        keys = list(self.rows)
        if len(keys) > TABLE_ROWS:
            keys = sorted(keys, key=lambda k: -_badness(self.rows[k]))[:TABLE_ROWS]
        lines = []
        for k in keys:
            r = self.rows[k]
            lines.append(
                f"{k:<24} {r['mean_a']:>10.4g} {r['mean_b']:>10.4g} {r['sd_a']:>9.3g} "
                f"{r['sd_b']:>9.3g} {r['mean_diff_sd']:>8.2f} {r['sd_ratio']:>8.2f}"
                + ("  *" if r["flagged"] else "")
            )
        tail = [f"{len(self.flagged)} of {len(self.rows)} flagged"]
        if len(self.rows) > TABLE_ROWS:
            tail[0] += f" (the {TABLE_ROWS} farthest apart shown)"
        if self.only_a or self.only_b:
            tail.append(
                f"not compared: only in A {', '.join(self.only_a) or '-'}; "
                f"only in B {', '.join(self.only_b) or '-'}"
            )
        return "\n".join(head + lines + tail)

    def __str__(self) -> str:
        return self.table()

    def figure(self, path: str | Path, max_panels: int = 6, overwrite: bool = True) -> Path:
        """Overlaid marginal histograms of A and B for ``max_panels`` elements, the flagged
        ones first (the ones a reader of the table looks for), then in site order (an existing
        file at ``path`` is replaced only if ``overwrite``; never a link)."""
        from bayesdl.workflows.figures import plt, save

        path = Path(path)
        flagged = [k for k in self.flagged if k in self.draws]
        keys = (flagged + [k for k in self.draws if k not in flagged])[:max_panels]
        a, b = (_short(n) for n in self.names)
        cols = min(3, max(1, len(keys)))
        rows = max(1, math.ceil(len(keys) / cols))
        fig, axes = plt.subplots(rows, cols, figsize=(3.4 * cols, 2.5 * rows), squeeze=False)
        for ax in axes.ravel()[len(keys) :]:
            ax.axis("off")
        for ax, k in zip(axes.ravel(), keys, strict=False):
            xa, xb = self.draws[k]
            lo = float(np.nanmin([xa.min(), xb.min()]))
            hi = float(np.nanmax([xa.max(), xb.max()]))
            bins = np.linspace(lo, hi, 40) if hi > lo else 10
            ax.hist(xb, bins=bins, density=True, alpha=0.45, color="C0", label=f"B {b}")
            ax.hist(xa, bins=bins, density=True, histtype="step", lw=2, color="C3", label=f"A {a}")
            r = self.rows[k]
            ax.set_title(
                f"{k}{' *' if r['flagged'] else ''}: diff {r['mean_diff_sd']:.2f} sd, "
                f"ratio {r['sd_ratio']:.2f}",
                fontsize=8,
            )
            ax.set_yticks([])
        axes[0][0].legend(fontsize=7)
        save(fig, path.parent, path.name, replace=overwrite)
        return path


def _short(name: str, width: int = 28) -> str:
    return name if len(name) <= width else "..." + name[-(width - 3) :]


def _badness(r: dict[str, Any]) -> float:
    ratio = r["sd_ratio"]
    finite = ratio > 0 and math.isfinite(ratio)
    sd_term = abs(math.log(ratio)) / math.log(SD_RANGE[1]) if finite else math.inf
    diff = abs(r["mean_diff_sd"])
    return max(diff / MEAN_LIMIT if math.isfinite(diff) else math.inf, sd_term)


def _elements(name: str, shape: tuple[int, ...]) -> list[tuple[str, tuple[int, ...]]]:
    if not shape:
        return [(name, ())]
    return [(f"{name}[{','.join(map(str, i))}]", i) for i in np.ndindex(*shape)]


def compare_draws(
    a: dict[str, torch.Tensor | np.ndarray],
    b: dict[str, torch.Tensor | np.ndarray],
    names: tuple[str, str] = ("A", "B"),
) -> Comparison:
    """Compare draws ``{site: [n, *shape]}`` of A against the reference B, elementwise."""
    arr = {
        side: {k: np.asarray(v.detach().cpu() if torch.is_tensor(v) else v, dtype=np.float64)
               for k, v in d.items()}
        for side, d in (("a", a), ("b", b))
    }  # fmt: skip
    da, db = arr["a"], arr["b"]
    shared = [k for k in db if k in da and da[k].shape[1:] == db[k].shape[1:]]
    rows: dict[str, dict[str, Any]] = {}
    draws: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    lo, hi = SD_RANGE
    for site in shared:
        xa, xb = da[site], db[site]
        for label, i in _elements(site, xa.shape[1:]):
            ea, eb = xa[(slice(None), *i)], xb[(slice(None), *i)]
            ma, mb, sa, sb = ea.mean(), eb.mean(), ea.std(ddof=1), eb.std(ddof=1)
            with np.errstate(divide="ignore", invalid="ignore"):
                diff = float((ma - mb) / sb) if sb > 0 else (0.0 if ma == mb else math.inf)
                ratio = float(sa / sb) if sb > 0 else (1.0 if sa == 0 else math.inf)
            flagged = not (abs(diff) <= MEAN_LIMIT and lo <= ratio <= hi)
            rows[label] = {
                "mean_a": float(ma),
                "mean_b": float(mb),
                "sd_a": float(sa),
                "sd_b": float(sb),
                "mean_diff_sd": diff,
                "sd_ratio": ratio,
                "flagged": flagged,
            }
            draws[label] = (ea, eb)
    only_a = [k for k in da if k not in shared]
    only_b = [k for k in db if k not in shared]
    return Comparison(rows, names, only_a, only_b, draws)
