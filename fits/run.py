"""A run by any method, end to end: fit it, reopen it as a posterior, evaluate it, predict from
it, sample from it. Each call looks its method up once (:mod:`bayesdl.fits.methods`) and hands
over; the command line and the Python API (:func:`bayesdl.fit`, :func:`bayesdl.load`) call these.

A run folder holds ``config.json`` (the command's options), ``checkpoint.pt`` (VI) or
``draws.npz`` (NUTS), ``metrics.jsonl``, ``summary.json`` and the figures
(:mod:`bayesdl.fits.records`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bayesdl.fits import records
from bayesdl.fits.base import Run
from bayesdl.fits.methods import method_of, method_of_folder
from bayesdl.fits.posterior import Posterior
from bayesdl.fits.records import RUN_FILES
from bayesdl.inference import files
from bayesdl.inference.errors import UserError
from bayesdl.workflows.base import Workflow
from bayesdl.workflows.fit_options import FitOptions

__all__ = [
    "RUN_FILES",
    "Run",
    "evaluate_run",
    "fit_posterior",
    "fit_run",
    "load_posterior",
    "predict_run",
    "run_fit",
    "sample_run",
]


def fit_run(
    workflow_cls: type[Workflow],
    options: FitOptions,
    out: Path | None,
    *,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = True,
) -> Run:
    """Fit a registered model by the method its options name (into the run folder ``out`` when
    given: config, metrics, checkpoint or draws, summary, figures)."""
    return method_of(options).fit(
        workflow_cls, options, out, resume=resume, overwrite=overwrite, progress=progress
    )


def run_fit(
    workflow_cls: type[Workflow],
    options: FitOptions,
    out: Path,
    *,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """Fit a registered model into ``out`` and return its summary (see :func:`fit_run`)."""
    return fit_run(
        workflow_cls, options, out, resume=resume, overwrite=overwrite, progress=progress
    ).summary


def fit_posterior(
    workflow_cls: type[Workflow],
    options: FitOptions,
    out: Path | None,
    *,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = True,
) -> Posterior:
    """:func:`fit_run`, its run wrapped as its method's :class:`Posterior`."""
    run = fit_run(workflow_cls, options, out, resume=resume, overwrite=overwrite, progress=progress)
    return method_of(options).posterior(run)


def load_posterior(
    run_dir: str | Path, registry: dict, device: str | None = None, guide: Any = None
) -> Posterior:
    """Reopen a run folder as its method's :class:`Posterior` (``registry`` holding its model;
    ``guide``: a guide given from Python, which a VI run needs again)."""
    run_dir = Path(run_dir)
    if not files.is_dir(run_dir, "run folder"):
        raise UserError(f"{run_dir} is not a run folder")
    model = records.read_config(run_dir)["model"]
    if model not in registry:
        raise UserError(
            f"{run_dir} holds a model defined in Python ({model}): pass it again, "
            "bayesdl.load(dir, model=fn) (a PyroModule is found again when the file of its "
            "class binds it to a module-level name, model = Net(), and you fit that)"
        )
    method = method_of_folder(run_dir)
    overrides = {} if guide is None else {"guide": guide}
    return method.posterior(method.load(run_dir, registry, device, overrides))


def evaluate_run(
    run_dir: Path,
    registry: dict,
    device: str | None = None,
    overrides: dict[str, Any] | None = None,
    seed: int | None = None,
) -> dict[str, Any]:
    """Held-out metrics of a run, saved to ``evaluation.json``."""
    return method_of_folder(run_dir).evaluate(Path(run_dir), registry, device, overrides, seed)


def predict_run(
    run_dir: Path, registry: dict, path: Path, device: str | None = None, seed: int | None = None
) -> dict:
    """Posterior predictive of a run for new inputs."""
    return method_of_folder(run_dir).predict(Path(run_dir), registry, Path(path), device, seed)


def sample_run(
    run_dir: Path,
    registry: dict,
    out: Path | None = None,
    device: str | None = None,
    seed: int | None = None,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Draw from a fitted generative model into ``out`` (default: the run folder, whose
    sample files are replaced; another folder must be new or empty unless ``overwrite``)."""
    method = method_of_folder(run_dir)
    return method.sample(Path(run_dir), registry, out, device, seed, overwrite)
