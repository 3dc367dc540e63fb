"""The tour's section on simulation-based calibration (``bayesdl tour``; :func:`bayesdl.sbc`).

One regression, ``examples/sbc_regression.py`` (``w ~ N(0, I_2)``, ``y ~ N(x w, 0.5^2)``, 20
rows), fitted by mean-field VI (auto-normal) on two designs: correlated columns, where the
posterior's coefficients correlate at -0.95 and the best factorized Gaussian is about a third
as wide as the posterior (SBC: U-shaped ranks, miscalibrated), and orthogonal columns, where
the posterior factorizes and mean field can be exact (SBC: calibrated). Each SBC is
:data:`REPLICATIONS` compiled fits of :data:`STEPS` steps; its folder holds ``sbc.json`` and
``sbc_ranks.png``.
"""

from __future__ import annotations

import html
import shlex
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from bayesdl.inference.errors import UserError
from bayesdl.reports import page as report
from bayesdl.reports import verdict
from bayesdl.reports.sbc_report import FIGURE, SBC_FILE

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
#: replications and fixed steps per fit of each SBC: the section took 28.5 s of CPU, 7.6 of
#: them the process's first Inductor compile (docs/sbc.md)
REPLICATIONS, STEPS = 20, 1000
#: (design, data file) of the two SBCs, run into ``out/sbc/DESIGN``
DESIGNS = (("correlated", "sbc_correlated.csv"), ("orthogonal", "sbc_orthogonal.csv"))
NOISE = 0.5
#: the family under test: mean field (the default guide, auto, would be auto-mvn here)
GUIDE = "auto-normal"


def refuse_existing(out: Path) -> None:
    """Refuse (before anything is fitted) a tour folder that already holds these SBCs."""
    for name, _ in DESIGNS:
        path = Path(out) / "sbc" / name / SBC_FILE
        if path.exists():
            raise UserError(
                f"tour: {path} already exists; choose another --out, or add --overwrite to "
                "replace the tour's runs"
            )


def closed_form(csv: Path) -> dict[str, np.ndarray | float]:
    """The exact posterior's sds and correlation of the two coefficients, and the sds of the
    best factorized Gaussian (``1 / sqrt(Lambda_kk)``), from the design in ``csv``."""
    x = np.loadtxt(csv, delimiter=",", skiprows=1)[:, :2]
    precision = np.eye(2) + x.T @ x / NOISE**2
    cov = np.linalg.inv(precision)
    sd = np.sqrt(np.diag(cov))
    return {
        "sd": sd,
        "mean_field_sd": 1 / np.sqrt(np.diag(precision)),
        "corr": cov[0, 1] / sd.prod(),
    }


def _sbc(name: str, csv: Path, out: Path, settings: dict, quick: bool):
    import bayesdl

    replications, steps, compile = (10, 100, False) if quick else (REPLICATIONS, STEPS, True)
    spec = f"{EXAMPLES / 'sbc_regression.py'}:model"
    argv = ["--data", str(csv), "--x-cols", "x1,x2", "--y-col", "y", "--guide", GUIDE]
    argv += ["--compile"] * compile
    argv += ["--replications", str(replications), "--steps", str(steps)]
    command = f"bayesdl sbc {spec} {shlex.join(argv)} --out {out}"
    print(f"[tour] sbc {name} {shlex.join(argv)}", file=sys.stderr, flush=True)
    t0 = time.perf_counter()
    result = bayesdl.sbc(
        spec, data=csv, x_cols="x1,x2", y_col="y", guide=GUIDE, replications=replications,
        steps=steps,
        compile=compile, out=out, **settings,
    )  # fmt: skip
    return result, time.perf_counter() - t0, command


def _row(name: str, csv: Path, result, seconds: float) -> list:
    exact = closed_form(csv)
    worst = min(result.tests, key=lambda t: t.p_adjusted)
    return [
        name,
        float(exact["corr"]),
        " / ".join(f"{v:.3f}" for v in exact["sd"]),
        " / ".join(f"{v:.3f}" for v in exact["mean_field_sd"]),
        result.verdict,
        f"{worst.label}: p = {worst.p_adjusted:.2g}, z_var {worst.z_var:+.1f}",
        seconds / max(1, len(result.replications)),
    ]


#: what the theory says each design's SBC finds for the mean-field family
EXPECTED = {"correlated": "miscalibrated", "orthogonal": "calibrated"}


def sbc_verdict(results: dict[str, Any]) -> verdict.Verdict:
    """Every replication's fit converged; each design's SBC verdict is the one the closed form
    predicts (:data:`EXPECTED`: a factorized Gaussian is exact only when the posterior
    factorizes); an inconclusive SBC (too few replications) is not judged."""
    fits = [(f"{name} #{i + 1}", rep.get("converged"))
            for name, r in results.items() for i, rep in enumerate(r.replications)]  # fmt: skip
    converged, text = verdict.fits_converged(fits)
    if len(fits) > 4:  # one line: the count, and the first few that did not converge
        bad = [n for n, ok in fits if ok is False]
        good = sum(ok is True for _, ok in fits)
        text = f"{good} of {len(fits)} replications converged" + (
            f"; NOT: {', '.join(bad[:4])}{' ...' if len(bad) > 4 else ''}" if bad else ""
        )
    judged = {n: r.verdict for n, r in results.items() if r.verdict != "inconclusive"}
    checks = [(f"{n}: {v} (expected {EXPECTED[n]})", float(v == EXPECTED[n]), 1.0, 1.0)
              for n, v in judged.items() if n in EXPECTED]  # fmt: skip
    agrees, agreement = verdict.within(checks, "designs as the closed form predicts")
    if not checks:
        agreement = "inconclusive SBC (too few replications): nothing judged"
    return verdict.Verdict(converged, text, agrees=agrees, agreement=agreement)


def sections(
    out: Path, overwrite: bool = False, progress: bool = False, quick: bool = False
) -> list[str]:
    """The SBC section, its two SBCs in ``out/sbc``; ``quick``: tiny settings (tests)."""
    return [verdict.shown(_section, out, overwrite, progress, quick)]


def _section(
    out: Path, overwrite: bool, progress: bool, quick: bool
) -> tuple[str, verdict.Verdict]:
    title = "<section><h2>simulation-based calibration: does the fit recover the truth?</h2>"
    if not (EXAMPLES / "sbc_regression.py").exists():
        missing = "<p>examples/sbc_regression.py is not here (a wheel install).</p></section>"
        return title + missing, verdict.no_fit("the example is not installed")
    settings = {"overwrite": overwrite, "progress": progress}
    rows, figures, commands, results = [], [], [], {}
    for name, data in DESIGNS:
        csv, folder = EXAMPLES / "data" / data, Path(out) / "sbc" / name
        result, seconds, command = _sbc(name, csv, folder, settings, quick)
        results[name] = result
        rows.append(_row(name, csv, result, seconds))
        figures.append(folder / FIGURE)
        commands.append(command)
    parts = [
        title,
        "<p>SBC (Talts et al. 2018) draws w from the prior and y from the model, fits each "
        "simulated data set and ranks the true w among L = 99 posterior draws: for the exact "
        "posterior every rank is uniform. Mean-field VI (auto-normal) on the same regression, "
        "w ~ N(0, I), y ~ N(x w, 0.5<sup>2</sup>), 20 rows, two designs. Correlated columns: "
        "the coefficients correlate a posteriori, the best factorized Gaussian is a third as "
        "wide, and the truth falls outside its draws too often (U-shaped ranks). Orthogonal "
        "columns: the posterior factorizes and the ranks are uniform.</p>",
        report.table(
            [
                "design",
                "posterior corr(w0, w1)",
                "exact sd w0 / w1",
                "mean-field optimum sd",
                "SBC verdict",
                "least uniform element",
                "s per replication",
            ],
            rows,
        ),  # fmt: skip
        "<div class=figs>" + "".join(report.image(f) for f in figures) + "</div>",
        "<p class=meta>commands: "
        + "; ".join(f"<code>{html.escape(c)}</code>" for c in commands)
        + "</p></section>",
    ]
    return "\n".join(parts), sbc_verdict(results)
