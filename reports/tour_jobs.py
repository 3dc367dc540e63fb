"""The tour's sections as independent jobs, run one after another or in worker processes.

Every section writes its own folders under ``out`` (a model's runs, ``nuts/``, ``lecture/``,
...) and returns its HTML, so sections share nothing but the page they end on: with ``jobs > 1``
they run in ``jobs`` spawned processes (one torch thread each unless told otherwise), the longest
first, and the page keeps the tour's order. Each job starts from the same seed
(``pyro.set_rng_seed(0)``) whichever process runs it and whatever ran before it there, so the page's
numbers do not depend on ``jobs``.
"""

from __future__ import annotations

import multiprocessing
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from importlib import import_module
from pathlib import Path
from typing import Any

#: seconds each job took in a 2-core CI run (`bayesdl tour`, 2026-12-03): the order jobs start in
#: (longest first keeps two workers busy to the end); a job not named here counts as 20 s
COST = {
    "bayesdl.reports.tour_nuts": 80,
    "bayesdl.reports.tour_models": 70,
    "bayesdl.reports.tour_sbc": 60,
    "bayesdl.reports.tour_lecture": 45,
    "bnn": 35,
    "linreg": 30,
    "ss-vae": 25,
    "stochastic-depth": 20,
    "vae": 18,
    "coin": 10,
    "bayesdl.reports.tour_full_protocols": 0,
}


@dataclass(frozen=True)
class Job:
    """Sections of the page: ``module.sections(out, overwrite=, progress=, **dict(keywords))``
    (a module of :data:`bayesdl.reports.tour.SECTIONS`, or :mod:`bayesdl.reports.tour_fits` with
    one model's planned runs); ``name`` is what the tour's log calls it."""

    name: str
    module: str
    keywords: tuple[tuple[str, Any], ...] = ()


def default_jobs() -> int:
    """Worker processes when ``--jobs`` is not given: one per core, at most 4 (the tour has
    about ten jobs of 10-80 s; more workers than that mostly wait)."""
    return max(1, min(4, os.cpu_count() or 1))


def run_job(job: Job, out: Path, overwrite: bool, progress: bool) -> list[str]:
    """The HTML sections of ``job`` (its fits and figures written under ``out``)."""
    import pyro

    pyro.set_rng_seed(0)
    t0 = time.perf_counter()
    sections = import_module(job.module).sections
    html = sections(out, overwrite=overwrite, progress=progress, **dict(job.keywords))
    print(f"[tour] {job.name}: {time.perf_counter() - t0:.0f} s", file=sys.stderr, flush=True)
    return html


def _start_worker(threads: int) -> None:
    """A worker's set-up: ``threads`` torch intra-op threads, Pyro's log level as the CLI's."""
    import logging

    import pyro  # noqa: F401  (its import sets the "pyro" logger's level: set ours after it)
    import torch

    torch.set_num_threads(threads)
    logging.getLogger("pyro").setLevel(logging.WARNING)


def run_jobs(
    jobs: list[Job], out: Path, overwrite: bool, progress: bool, workers: int, threads: int = 1
) -> list[str]:
    """Every job's HTML, in the order of ``jobs``; ``workers > 1``: in that many processes (no
    progress bars then: they would interleave), the costliest first (:data:`COST`)."""
    workers = min(workers, len(jobs))
    if workers <= 1:
        return [s for job in jobs for s in run_job(job, out, overwrite, progress)]
    order = sorted(range(len(jobs)), key=lambda i: -COST.get(jobs[i].name, 20))
    context = multiprocessing.get_context("spawn")  # no fork of a process holding torch's pools
    with ProcessPoolExecutor(workers, context, _start_worker, (threads,)) as pool:
        futures = {i: pool.submit(run_job, jobs[i], out, overwrite, False) for i in order}
        return [s for i in range(len(jobs)) for s in futures[i].result()]
