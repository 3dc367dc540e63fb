"""The tour's pointer to the papers' results at their full protocols (docs/full_protocols.md).

Those runs take hours (200 epochs of sparse VD, 20 UCI splits with a validation grid, M2 until
its ELBO is flat) and read data the tour does not ship (MNIST's IDX files, the UCI splits), so
the tour fits none of them: its section names each benchmark, the paper's figure it is measured
against and the command that produces the table, and links the page with the tables.
"""

from __future__ import annotations

import html
from pathlib import Path

from bayesdl.reports import page as report
from bayesdl.reports import verdict

DOC = "docs/full_protocols.md"
#: (benchmark, protocol, the reference it is set beside, the command)
ROWS = [
    (
        "UCI regression",
        "8 sets x 20 splits, 50 hidden units, grid tuned on a validation part",
        "Gal's MC dropout (grid search), PBP",
        "python benchmarks/uci.py --data-dir DIR --out OUT",
    ),
    (
        "Sparse VD",
        "LeNet-300-100 and LeNet-5, 200 epochs, prune at log alpha >= 3",
        "Molchanov et al. 2017: 1.92 % at 68x, 0.75 % at 280x",
        "python benchmarks/bnn_sparsevd_mnist.py --data-dir DIR --arch mlp --out OUT",
    ),
    (
        "Calibration",
        "LeNet-5 on MNIST: mean field, Flipout, MC dropout, MAP, ensemble of 5",
        "uncertainty-baselines: VI NLL 0.048, ECE 0.010",
        "python benchmarks/bnn_calibration_mnist.py --data-dir DIR --out OUT",
    ),
    (
        "M2 semi-supervised",
        "100 labels x 5 draws, 600 / 1000 / 3000, until the ELBO is flat",
        "Kingma et al. 2014: 11.97 %; Pyro's tutorial 6.81 %",
        "python benchmarks/ss_vae_mnist.py --data-dir DIR --labels 100 --draws 5 --out OUT",
    ),
]


def refuse_existing(out: Path) -> None:
    """Nothing to refuse: this section writes no files."""
    del out


def sections(
    out: Path, overwrite: bool = False, progress: bool = False, quick: bool = False
) -> list[str]:
    """One section: the full-protocol benchmarks, their references and commands, and the
    link to the page of tables (nothing is fitted: see the module docstring)."""
    del out, overwrite, progress, quick
    doc = Path(__file__).resolve().parents[1] / DOC
    link = f"<a href='{html.escape(doc.as_uri())}'>{DOC}</a>" if doc.exists() else DOC
    rows = [list(r) for r in ROWS]
    return [
        "<section><h2>The papers' results at their full protocols</h2>"
        f"<p>Hours of CPU each, on data the tour does not ship: the tables, the exact commands "
        f"and where the time goes are in {link}; the tour fits none of them.</p>"
        + report.table(["benchmark", "protocol", "measured against", "command"], rows)
        + verdict.no_fit("hours-long benchmarks, run by hand: their verdicts are in " + DOC).html()
        + "</section>"
    ]
