"""`bayesdl tour`: every registered model fitted with its quick settings, one HTML page.

:func:`plan` names the run folders of every model's ``tour_runs``, :func:`refuse_existing`
checks them before anything is fitted, :func:`run` fits them (through
:func:`bayesdl.fits.run.run_fit`, as `bayesdl fit` does) and writes ``index.html``
(:mod:`bayesdl.reports.page`), with the whole tour's lecture sections (:data:`SECTIONS`) after
the models.
"""

from __future__ import annotations

import os
import shlex
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


def fit_section(name: str, planned: list[PlannedRun], overwrite: bool, progress: bool) -> str:
    """Fit the planned runs of model ``name``; its section of the page (comparison rows)."""
    from bayesdl.fits.run import run_fit
    from bayesdl.reports import page

    runs = [r for r in planned if r.name == name]
    shown = []
    for r in runs:
        print(f"[tour] {name} {' '.join(r.argv)}", file=sys.stderr)
        summary = run_fit(r.workflow, r.options, r.out, overwrite=overwrite, progress=progress)
        command = f"{PROG} fit {name} {shlex.join(r.argv)} --out {r.out}"
        shown.append(
            {
                "label": f"{name}: guide {r.options.guide}",
                "summary": summary,
                "dir": r.out,
                "rows": r.workflow(r.options).comparison(summary),
                "command": command,
            }
        )
    return page.section(name, runs[0].workflow.description, shown)


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
) -> Path:
    """Fit the models ``names`` into ``out`` (one folder a run) and write ``out/index.html``;
    ``whole``: the whole tour, with the lecture's sections (:data:`SECTIONS`). Every refusal
    (an existing page or run, a link) comes before anything is fitted. Returns the page."""
    from bayesdl.fits import outputs
    from bayesdl.reports import page

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
    sections = [fit_section(name, planned, overwrite, progress) for name in names]
    for module in extras:
        sections += module.sections(out, overwrite=overwrite, progress=progress)
    elapsed = time.perf_counter() - t0
    header = f"Every registered model fitted with quick defaults; {elapsed:.0f} s in all."
    outputs.write(index, page.page(sections, header), overwrite=overwrite, flag="--out")
    return index
