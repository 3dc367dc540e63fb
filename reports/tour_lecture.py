"""The tour's sections that check a claim of the lecture against numbers (``bayesdl tour``).

* Coin, sequential updating: each batch's posterior is the next batch's prior; the end equals
  the posterior of all flips at once (exactly in closed form, within fitting noise for fits).
* "In the limit of infinite data the posterior collapses into a point": posterior sd against N
  (the ``1 / sqrt(N)`` rate), MLE, MAP and Bayes predictives converging, the point estimates'
  over-confidence at small N (expected log loss of the next flip, exact over datasets).
* "Not the amount of data ... but how much data per parameter": a BNN against the same network
  fitted by MLE and MAP as the digits training set shrinks.
* ``KL(q || p(theta | D)) = log p(D) - ELBO(q)`` for the coin and linear regression, guides of
  several qualities, the ELBO in closed form and by Pyro's ``Trace_ELBO``.
* "Single network (single-sample ensemble) also works": a BNN's accuracy, NLL and cost against
  the number of posterior draws in its predictive.

Everything is fitted with the public API (:func:`bayesdl.fit`, the named models ``coin`` and
``linreg``, :func:`bayesdl.bnn.bayesian`); the closed forms are in
:mod:`bayesdl.reports.lecture_math`. One module a claim: :mod:`.lecture_sequential`,
:mod:`.lecture_collapse`, :mod:`.lecture_data_per_parameter`, :mod:`.lecture_elbo_kl`,
:mod:`.lecture_ensemble` (their shared pieces in :mod:`.lecture_kit`); this module lists them
for the tour.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from bayesdl.fits.run import RUN_FILES
from bayesdl.inference.errors import UserError
from bayesdl.reports import (
    lecture_collapse,
    lecture_data_per_parameter,
    lecture_elbo_kl,
    lecture_ensemble,
    lecture_sequential,
    lecture_verdicts,
    verdict,
)
from bayesdl.reports.lecture_collapse import FIT_NS, _linreg_data, linreg_sd  # noqa: F401
from bayesdl.reports.lecture_data_per_parameter import BNN_SIZES, fit_digits  # noqa: F401
from bayesdl.reports.lecture_ensemble import ENSEMBLE_SIZES  # noqa: F401
from bayesdl.reports.lecture_kit import PI_TRUE, Context  # noqa: F401

FOLDER = "lecture"
#: the sections in the page's order: (name in the progress line, module, its section function)
SECTIONS = (
    ("sequential updating", lecture_sequential, lecture_sequential.sequential_section),
    ("posterior collapse", lecture_collapse, lecture_collapse.asymptotics_section),
    ("data per parameter", lecture_data_per_parameter,
     lecture_data_per_parameter.data_per_parameter_section),
    ("KL = log p(D) - ELBO", lecture_elbo_kl, lecture_elbo_kl.elbo_kl_section),
    ("single network", lecture_ensemble, lecture_ensemble.ensemble_section),
)  # fmt: skip
#: the run folders these sections write (coin and linreg fits whose summary.json they read)
RUN_DIRS = (*lecture_sequential.RUN_DIRS, *lecture_elbo_kl.RUN_DIRS, *lecture_collapse.RUN_DIRS)
FIGURES = tuple(module.FIGURE for _, module, _ in SECTIONS)


def refuse_existing(out: Path) -> None:
    """Refuse (before anything is fitted) a tour folder that already holds these runs/figures."""
    folder = Path(out) / FOLDER
    for name in RUN_DIRS:
        run_dir = folder / name
        if run_dir.exists() and (
            not run_dir.is_dir() or any((run_dir / f).exists() for f in RUN_FILES)
        ):
            raise UserError(
                f"tour: {run_dir} already holds a run; choose another --out, or add "
                "--overwrite to replace the tour's runs"
            )
    for name in FIGURES:
        if (folder / name).exists():
            raise UserError(
                f"tour: {folder / name} exists; choose another --out, or add --overwrite"
            )


def sections(
    out: Path,
    overwrite: bool = False,
    progress: bool = False,
    quick: bool = False,
    record: dict[str, Any] | None = None,
) -> list[str]:
    """The five lecture-claim sections, runs and figures in ``out/lecture``; ``quick``: tiny
    settings (tests); ``record``: filled with each section's key numbers."""
    out = Path(out) / FOLDER
    out.mkdir(parents=True, exist_ok=True)
    ctx = Context(quick=quick, overwrite=overwrite, record={} if record is None else record)
    html_parts = []
    for name, _, make in SECTIONS:
        print(f"[tour] lecture claims: {name}", file=sys.stderr, flush=True)
        html_parts.append(verdict.shown(lecture_verdicts.judged, name, make, out, ctx))
    return html_parts
