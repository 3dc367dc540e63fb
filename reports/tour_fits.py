"""One model's section of the tour: its planned runs fitted as `bayesdl fit` fits them."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path
from typing import Any

PROG = "bayesdl"


def sections(
    out: Path, overwrite: bool = False, progress: bool = True, *, runs: tuple[Any, ...]
) -> list[str]:
    """Fit ``runs`` (PlannedRuns of :func:`bayesdl.reports.tour.plan`, one model's, each into
    its own folder under ``out``); the model's section of the page (its comparison rows)."""
    from bayesdl.fits.run import run_fit
    from bayesdl.reports import page, verdict

    del out  # every planned run names its folder
    shown = []
    with verdict.collect_warnings() as caught:
        for r in runs:
            print(f"[tour] {r.name} {' '.join(r.argv)}", file=sys.stderr)
            summary = run_fit(r.workflow, r.options, r.out, overwrite=overwrite, progress=progress)
            command = f"{PROG} fit {r.name} {shlex.join(r.argv)} --out {r.out}"
            shown.append(
                {
                    "label": f"{r.name}: guide {r.options.guide}",
                    "summary": summary,
                    "dir": r.out,
                    "rows": r.workflow(r.options).comparison(summary),
                    "command": command,
                }
            )
    named = [(Path(s["dir"]).name, s) for s in shown]
    agrees, agreement = verdict.rows_agreement([(n, s["rows"]) for n, s in named])
    v = verdict.runs_verdict([(n, s["summary"]) for n, s in named], agrees, agreement)
    section = page.section(runs[0].name, runs[0].workflow.description, shown)
    return [verdict.finish(section, v, caught)]
