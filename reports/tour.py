"""`bayesdl tour`: every registered model fitted with its quick settings, one HTML page.

:func:`plan` names the run folders of every model's ``tour_runs``, :func:`refuse_existing`
checks them before anything is fitted, :func:`run` fits them (:mod:`bayesdl.reports.tour_fits`,
through :func:`bayesdl.fits.run.run_fit`, as `bayesdl fit` does; every section a job of
:mod:`bayesdl.reports.tour_jobs`) and writes ``index.html``
(:mod:`bayesdl.reports.page`), with the whole tour's lecture sections (:data:`SECTIONS`) after
the models.
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass
from importlib import import_module
from pathlib import Path
from typing import Any

from bayesdl.inference.errors import UserError
from bayesdl.workflows.fit_options import from_namespace
from bayesdl.workflows.options import fit_parser

PROG = "bayesdl"

#: the lecture's order of the models; the other registered models follow, sorted
LECTURE_ORDER = ["coin", "linreg", "bnn", "vae", "stochastic-depth"]

#: modules adding sections to the whole tour, in order; each has ``refuse_existing(out)`` (raise
#: UserError, before anything is fitted, if ``out`` holds its runs) and
#: ``sections(out, overwrite, progress) -> list[str]`` (HTML, one string a section)
SECTIONS = [
    "bayesdl.reports.tour_nuts",
    "bayesdl.reports.tour_lecture",
    "bayesdl.reports.tour_models",
    "bayesdl.reports.tour_sbc",
    "bayesdl.reports.tour_full_protocols",
]

#: the module whose ``sections`` fits one model's planned runs (its section of the page)
FITS = "bayesdl.reports.tour_fits"


@dataclass
class PlannedRun:
    """One `fit` of the tour: the model's name and workflow, its argv, options and folder."""

    name: str
    workflow: type
    argv: list[str]
    options: Any  # FitOptions
    out: Path


def model_names(registry: dict[str, type], only: str | None) -> list[str]:
    """The models of the tour: ``--only``'s comma-separated names, else every registered model
    (:data:`LECTURE_ORDER` first)."""
    known = [n for n in LECTURE_ORDER if n in registry] + sorted(set(registry) - set(LECTURE_ORDER))
    names = known if not only else [n.strip() for n in only.split(",") if n.strip()]
    if not names:
        raise UserError("--only names no model")
    return names


def plan(registry: dict[str, type], names: list[str], out: Path) -> list[PlannedRun]:
    """Every run of the tour, its options parsed (a bad tour run fails before any fit)."""
    planned = []
    for name in names:
        workflow = registry[name]
        for i, run_argv in enumerate(workflow.tour_runs):
            parsed = fit_parser(workflow, f"{PROG} fit {name}").parse_args(run_argv)
            options = from_namespace(workflow, parsed)
            run_dir = out / (
                name if len(workflow.tour_runs) == 1 else f"{name}-{i + 1}-{options.guide}"
            )
            planned.append(PlannedRun(name, workflow, run_argv, options, run_dir))
    return planned


def refuse_existing(planned: list[PlannedRun]) -> None:
    """Never replace a run the user made or kept: refuse before fitting (without --overwrite)."""
    from bayesdl.fits.run import RUN_FILES

    for run_dir in (r.out for r in planned):
        if run_dir.exists() and (
            not run_dir.is_dir() or any(os.path.lexists(run_dir / f) for f in RUN_FILES)
        ):
            raise UserError(
                f"tour: {run_dir} already holds a run; choose another --out, or add "
                "--overwrite to replace the tour's runs"
            )


#: the file a tour writes first into its --out: a folder holding it (a regular file with
#: this text) is a tour's, which the same command replaces; any other folder is refused
MARKER = ".bayesdl-tour"
MARKER_TEXT = "written by `bayesdl tour`: running it again replaces this folder's tour\n"


def _written_by_a_tour(out: Path) -> bool:
    from bayesdl.inference import files

    marker = out / MARKER
    st = files.entry(marker, "--out")
    if st is None or not os.path.isfile(marker) or os.path.islink(marker):
        return False
    try:
        return files.read_text(marker, "tour marker") == MARKER_TEXT
    except UserError:
        return False


def run(
    registry: dict[str, type],
    names: list[str],
    out: Path,
    *,
    whole: bool,
    overwrite: bool = False,
    progress: bool = True,
    jobs: int = 1,
    threads: int = 1,
) -> Path:
    """Fit the models ``names`` into ``out`` (one folder a run) and write ``out/index.html``;
    ``whole``: the whole tour, with the lecture's sections (:data:`SECTIONS`); ``jobs``: worker
    processes of ``threads`` torch threads each (:mod:`bayesdl.reports.tour_jobs`; the page is
    the same for every ``jobs``). Every refusal (an existing page or run, a link) comes before
    anything is fitted. Returns the page."""
    from bayesdl.fits import outputs
    from bayesdl.reports import page
    from bayesdl.reports.tour_jobs import Job, run_jobs

    index = out / "index.html"
    if not overwrite and _written_by_a_tour(out):  # the README's command, run again
        print(f"[tour] {out} holds an earlier tour: replacing it", file=sys.stderr)
        overwrite = True
    outputs.check_file(index, overwrite, "--out")  # before anything is fitted
    outputs.check_no_links(out)
    planned = plan(registry, names, out)
    if not overwrite:
        refuse_existing(planned)
    # sections that show a claim of the lecture (VI beside NUTS, ...): whole-tour only
    extras = [import_module(m) for m in SECTIONS] if whole else []
    if not overwrite:
        for module in extras:
            module.refuse_existing(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"cannot make {out}: {e.strerror or e}") from None
    outputs.write(out / MARKER, MARKER_TEXT, overwrite=True, flag="--out")
    t0 = time.perf_counter()
    work = [Job(n, FITS, (("runs", tuple(r for r in planned if r.name == n)),)) for n in names]
    work += [Job(m.__name__, m.__name__) for m in extras]
    sections = run_jobs(work, out, overwrite, progress, jobs, threads)
    elapsed = time.perf_counter() - t0
    header = f"Every registered model fitted with quick defaults; {elapsed:.0f} s in all."
    outputs.write(index, page.page(sections, header), overwrite=overwrite, flag="--out")
    return index
