"""The result of simulation-based calibration (:func:`bayesdl.sbc`): the replications' ranks,
the test of every element (:mod:`bayesdl.inference.ranks`), the verdict with its remarks, the
table, ``sbc.json`` and the rank histograms (:mod:`bayesdl.reports.sbc_figures`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from bayesdl.inference import ranks as stats

#: the files an SBC folder holds
SBC_FILE, FIGURE = "sbc.json", "sbc_ranks.png"
#: at most this many elements of a site are ranked (its first ones, in row-major order)
MAX_ELEMENTS = 100


@dataclass(repr=False)
class SBCResult:
    """What :func:`sbc` found: the replications' ranks, the test of every element, the
    verdict. ``print`` it for the table; ``.calibrated``, ``.ranks``, ``.tests``,
    ``.figure(path)``, ``.to_json()``."""

    settings: dict[str, Any]
    sites: dict[str, dict[str, Any]]  # {site: {"shape", "elements"}}
    replications: list[dict[str, Any]]
    notes: list[str] = field(default_factory=list)
    interrupted: bool = False
    out: Path | None = None

    def __post_init__(self) -> None:
        ranked = self.ranked()
        self.tests = stats.uniformity(self.ranks, self.labels, self.settings["num_draws"])
        self.verdict, self.diagnosis = stats.verdict(self.tests, len(ranked))
        self.diagnosis += self._remarks(ranked)
        if self.verdict == "calibrated" and len(ranked) < len(self.replications):
            self.verdict = "inconclusive"

    def ranked(self) -> list[dict[str, Any]]:
        """The replications whose fit succeeded."""
        return [rep for rep in self.replications if "ranks" in rep]

    @property
    def labels(self) -> dict[str, list[str]]:
        """``{site: [element labels]}`` of the ranked elements."""
        return {k: v["elements"] for k, v in self.sites.items()}

    @property
    def ranks(self) -> dict[str, np.ndarray]:
        """``{site: ranks [R, elements]}`` (0..L) of the succeeded replications."""
        ranked = self.ranked()
        return {
            k: np.array([rep["ranks"][k] for rep in ranked], dtype=np.int64).reshape(
                len(ranked), len(v["elements"])
            )
            for k, v in self.sites.items()
        }

    @property
    def calibrated(self) -> bool:
        """Whether every ranked element passed (and no fit failed, with enough replications)."""
        return self.verdict == "calibrated"

    def _remarks(self, ranked: list[dict[str, Any]]) -> list[str]:
        """Lines beside the tests: failed and unconverged fits, NUTS's ESS, the remedies."""
        out, total = [], len(self.replications)
        failed = [rep for rep in self.replications if "error" in rep]
        if failed:
            out.append(
                f"{len(failed)} of {total} fits failed (replication {failed[0]['replication']}: "
                f"{failed[0]['error']}); their ranks are missing, which can hide a miscalibration"
            )
        unconverged = sum(1 for rep in ranked if rep.get("converged") is False)
        if unconverged:
            steps = self.settings["options"].get("steps")
            out.append(
                f"{unconverged} of {len(ranked)} fits did not converge ({steps} steps): their "
                "ranks show the optimizer as well as the family; raise steps"
            )
        low = [rep for rep in ranked if (rep.get("ess_min") or np.inf) < self.settings["num_draws"]]
        if low:
            out.append(
                f"{len(low)} of {len(ranked)} NUTS fits have an effective sample size below "
                f"L = {self.settings['num_draws']} (smallest {min(r['ess_min'] for r in low):.0f})"
                ": correlated draws make the ranks look too narrow; raise num_samples"
            )
        if self.verdict == "miscalibrated" and self.settings["method"] == "vi":
            richer = "a richer guide (auto-mvn, auto-lowrank), method='nuts'"
            out.append(
                f"remedies: more steps first ({unconverged} fits unconverged), then {richer}"
                if unconverged
                else f"remedies: {richer}, or more steps"
            )
        return out

    def seconds(self) -> dict[str, float | None]:
        """Mean and median wall seconds of a fit, its mean CPU seconds, the mean seconds of a
        whole replication (fit and draws) and the total."""
        fits = [rep["fit_seconds"] for rep in self.replications if "fit_seconds" in rep]
        cpu = [rep["fit_cpu_seconds"] for rep in self.ranked() if "fit_cpu_seconds" in rep]
        draws = [rep.get("draw_seconds", 0.0) for rep in self.ranked()]
        whole = [
            rep.get("fit_seconds", 0.0) + rep.get("draw_seconds", 0.0) for rep in self.ranked()
        ]

        def mean(v: list[float]) -> float | None:
            return float(np.mean(v)) if v else None

        return {
            "fit_mean": mean(fits),
            "fit_median": float(np.median(fits)) if fits else None,
            "fit_cpu_mean": mean(cpu),
            "replication_mean": mean(whole),
            "total": float(np.sum(fits) + np.sum(draws)),
        }

    def figure(self, path: str | Path) -> Path:
        """The rank histograms (the 99 % band of uniform ranks shaded) as a PNG at ``path``."""
        from bayesdl.reports.sbc_figures import rank_histograms

        path = Path(path)
        rank_histograms(self, path)
        return path

    def to_json(self) -> dict[str, Any]:
        """``sbc.json``: settings, verdict, tests, times and every replication's ranks."""
        return {
            "format": 1,
            "verdict": self.verdict,
            "calibrated": self.calibrated,
            "diagnosis": self.diagnosis,
            "notes": self.notes,
            "replications_done": len(self.replications),
            "replications_ranked": len(self.ranked()),
            "interrupted": self.interrupted,
            "settings": self.settings,
            "seconds": self.seconds(),
            "sites": self.sites,
            "tests": [t.to_json() for t in self.tests],
            "replications": self.replications,
        }

    def table(self) -> str:
        """One row per element: adjusted p-value, the shape scores, the shape; the verdict."""
        head = (
            f"SBC of {self.settings['model']}: {len(self.ranked())} replications, "
            f"L = {self.settings['num_draws']} draws, {self.settings['method']}"
            + (f" (guide {self.settings['guide']})" if self.settings["method"] == "vi" else "")
        )
        rows = [head, f"{'element':<20} {'p adj.':>8} {'z_var':>7} {'z_mean':>7}  shape"]
        for t in self.tests[:40]:
            rows.append(
                f"{t.label:<20} {t.p_adjusted:>8.3g} {t.z_var:>+7.1f} {t.z_mean:>+7.1f}  "
                f"{t.shape or ('not uniform' if t.fails else 'uniform')}"
            )
        if len(self.tests) > 40:
            rows.append(f"... ({len(self.tests) - 40} more elements in sbc.json)")
        rows.append(f"verdict: {self.verdict}")
        rows += [f"  {line}" for line in self.diagnosis]
        return "\n".join(rows)

    def __repr__(self) -> str:
        return self.table()
