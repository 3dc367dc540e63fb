"""Runs fitted by stochastic variational inference (``method="vi"``, the default): a guide
``q(z)`` fitted by the engine (:func:`bayesdl.inference.train.fit`), its checkpoint, summary and
checks written to the run folder; a VI run read back (parameters restored from
``checkpoint.pt``), evaluated, asked for predictions and for samples.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from bayesdl.fits import outputs, records
from bayesdl.fits.base import Run, build, model_params, on_device, posterior_guide, seed_draws
from bayesdl.fits.checks import vi_checks
from bayesdl.fits.folder import (
    check_resume,
    claimed,
    jsonable,
    os_error,
    prepare_out,
    writable,
    write_json,
)
from bayesdl.fits.rebuild import load_workflow
from bayesdl.fits.recording import folder_record, write_record
from bayesdl.fits.records import CONFIG, EVALUATION, PROTOTYPE, SUMMARY
from bayesdl.inference import checkpoint as ckpt
from bayesdl.inference import distributed, files
from bayesdl.inference.convergence import warn_unconverged
from bayesdl.inference.errors import UserError
from bayesdl.inference.moments import posterior_table
from bayesdl.inference.train import CHECKPOINT, FitConfig, FitResult, fit, restore
from bayesdl.workflows.base import Problem, Workflow, start
from bayesdl.workflows.fit_options import FitOptions

# ----------------------------------------------------------------------------- fitting


def fit_problem(
    problem: Problem,
    config: FitConfig,
    out: Path | None = None,
    *,
    resume: bool = False,
    progress: bool = True,
) -> FitResult:
    """Fit a built problem with the engine (its data size and data hook included); the fit's
    parameters land in ``problem.params``."""
    result = fit(
        problem.model,
        problem.guide,
        problem.data,
        config,
        out,
        data_size=problem.data_size,
        resume=resume,
        progress=progress,
        data_hook=problem.data_hook,
    )
    problem.params = result.params
    return result


def fit_run(
    workflow_cls: type[Workflow],
    options: FitOptions,
    out: Path | None,
    *,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = True,
) -> Run:
    """Fit a registered model's guide with ``options`` (into the run folder ``out`` when
    given: config, metrics, checkpoint, summary, figures)."""
    options.engine.validate()
    main = distributed.is_main()  # under torchrun only rank 0 writes the run folder
    if out is None:
        if resume:
            raise UserError("--resume needs --out DIR holding the checkpoint")
        workflow = start(workflow_cls, options)
        problem = build(workflow)
        config = workflow.engine  # as derived (an estimator the model asks for)
        result = fit_problem(problem, config, None, progress=progress)
        return Run(workflow, problem, result, summarize(workflow, problem, config, result))
    out = Path(out)
    if main:  # checked before anything is built or written
        prepare_out(out, resume=resume, overwrite=overwrite, make=False)
    workflow = start(workflow_cls, options)
    problem = build(workflow)  # the model, guide and data are checked before --out is touched
    config = workflow.engine
    with claimed(out, resume=resume, overwrite=overwrite, main=main):
        return _fit_locked(workflow, problem, config, out, resume, progress)


def _fit_locked(
    workflow: Workflow,
    problem: Problem,
    config: FitConfig,
    out: Path,
    resume: bool,
    progress: bool,
) -> Run:
    """:func:`fit_run`'s part that holds the run folder (see :func:`~.folder.claimed`)."""
    main = distributed.is_main()
    record, arrays = folder_record(workflow)
    if resume and main:
        check_resume(out, record)
        records.check_args(type(workflow), records.read_config(out), out / CONFIG)
    if main:
        write_record(out, record, arrays)
    result = fit_problem(problem, config, out, resume=resume, progress=progress)
    summary = summarize(workflow, problem, config, result)
    if main:
        few = workflow.prototype(problem)
        if few:  # `predict` then never re-reads the training data
            files.write_with(out / PROTOTYPE, lambda f: np.savez(f, **few))
        with problem.scope():
            summary["figures"] = workflow.figures(problem, out)
        write_json(out / SUMMARY, summary)
    return Run(workflow, problem, result, summary, out)


def summarize(
    workflow: Workflow, problem: Problem, config: FitConfig, result: FitResult
) -> dict[str, Any]:
    """The entries of ``summary.json``: settings, final ELBO, posterior, the model's params."""
    summary: dict[str, Any] = {
        "model": type(workflow).name,
        "guide": _name(workflow.settings.guide),
        "estimator": config.estimator,
        "steps": result.steps,
        "final_elbo": result.final_elbo,
        "wall_seconds": round(result.wall_seconds, 3),
        "compiled": result.compiled,
        "compile_seconds": round(result.compile_seconds, 3),
        "steps_per_second": round(result.steps_per_second, 2),
        "threads": result.threads,
        "device": result.device,
        "seed": config.seed,
        "particles": config.particles,
        "batch_size": config.batch_size,
        "processes": distributed.world_size(),
        "converged": result.convergence.get("converged"),
        "convergence": result.convergence,
    }
    if not distributed.is_main():
        return summary
    warn_unconverged(result.convergence)
    with problem.scope():
        summary["posterior"] = posterior_table(
            problem.model,
            posterior_guide(workflow, problem),
            on_device(problem.data, result.device),
            config.seed,
        )
        summary["params"] = jsonable(model_params(problem, max_elements=100))
        summary.update(workflow.summarize(problem))
        guide = posterior_guide(workflow, problem)
        summary.update(
            vi_checks(workflow, problem, guide, result.convergence, config.seed, config.batch_size)
        )
    return summary


def _name(guide: Any) -> Any:
    return guide if guide is None or isinstance(guide, str) else getattr(guide, "__name__", "guide")


# ----------------------------------------------------------------------------- reading back


def load_run(
    run_dir: str | Path,
    registry: dict,
    device: str | None = None,
    overrides: dict[str, Any] | None = None,
    prototype: bool = False,
) -> tuple[Workflow, Problem]:
    """Rebuild a finished (or interrupted) run: its workflow and problem, parameters restored
    into the problem's own param store (``problem.scope()``).

    ``overrides``: as :func:`~bayesdl.fits.rebuild.load_workflow`. ``prototype``: build from
    the run's ``prototype.npz`` (a few rows of the training data, enough for a model whose
    latents are all global) instead of re-reading the data file; a model whose parameters
    depend on the data size falls back to the whole data.
    """
    run_dir = Path(run_dir)
    if files.is_dir(run_dir, "run folder"):
        records.check_folder(run_dir)
        if files.entry(run_dir / CHECKPOINT) is None:
            raise UserError(f"{run_dir} holds no fitted run (no {CONFIG} or {CHECKPOINT})")
    if prototype and files.entry(run_dir / PROTOTYPE) is not None:
        files.load_npz(run_dir / PROTOTYPE, "the saved rows", follow=False, stored=True)
        few = {**(overrides or {}), "data": str(run_dir / PROTOTYPE)}
        try:
            return load_run(run_dir, registry, device, few)
        except UserError:
            pass  # local latents sized by the data: the whole training data it is
    workflow, problem = load_workflow(run_dir, registry, device, overrides)
    dev, problem.params = restore(
        problem.model, problem.guide, problem.data, run_dir / CHECKPOINT, workflow.engine.device
    )
    problem.data = on_device(problem.data, str(dev))
    return workflow, problem


def load(
    run_dir: str | Path,
    registry: dict,
    device: str | None = None,
    overrides: dict[str, Any] | None = None,
) -> Run:
    """A VI run folder as a :class:`~bayesdl.fits.base.Run`: :func:`load_run`, and the fit's
    result as far as the folder holds it (steps and history from the checkpoint, the final
    ELBO, seconds and device from ``summary.json``). A guide given from Python is not recorded
    by file: it must come again as ``overrides["guide"]``."""
    run_dir = Path(run_dir)
    cfg = records.read_config(run_dir)
    guide = str(cfg["args"].get("guide", ""))
    if "guide" not in (overrides or {}) and guide.startswith("python:"):
        raise UserError(
            f"{run_dir} was fitted with a guide given from Python "
            f"({guide[7:]}): pass it again, bayesdl.load(dir, guide=fn)"
        )
    workflow, problem = load_run(run_dir, registry, device, overrides)
    summary = records.read_summary(run_dir) or {"model": cfg["model"]}
    saved = ckpt.load(run_dir / CHECKPOINT)
    result = FitResult(
        steps=int(saved.get("step", 0)),
        final_elbo=float(summary.get("final_elbo") or float("nan")),
        wall_seconds=float(summary.get("wall_seconds") or 0.0),
        device=str(summary.get("device") or "cpu"),
        history=list(saved.get("history") or []),
        params=problem.params,
    )
    return Run(workflow, problem, result, summary, run_dir)


def evaluate(
    run_dir: Path,
    registry: dict,
    device: str | None = None,
    overrides: dict[str, Any] | None = None,
    seed: int | None = None,
) -> dict[str, Any]:
    """Held-out metrics of a VI run (the workflow's own), saved to ``evaluation.json``."""
    workflow, problem = load_run(run_dir, registry, device, overrides)
    target = Path(run_dir) / EVALUATION
    if not writable(Path(run_dir)) or (target.is_file() and not os.access(target, os.W_OK)):
        raise UserError(f"cannot write {target}: the run folder is read-only (evaluate a copy)")
    seed_draws(workflow, seed)
    with problem.scope():
        try:
            result = workflow.evaluate(problem, Path(run_dir))
        except OSError as e:
            raise os_error(e, "the evaluation") from None
    with outputs.not_busy(run_dir):  # a fit into the folder meanwhile: refused, not mixed
        write_json(target, result)
    return result


def predict(
    run_dir: Path, registry: dict, path: Path, device: str | None = None, seed: int | None = None
) -> dict:
    """Posterior predictive of a VI run for the new inputs in ``path`` (the workflow's own)."""
    workflow, problem = load_run(run_dir, registry, device, prototype=True)
    seed_draws(workflow, seed)
    with problem.scope():
        return workflow.predict(problem, Path(path))


def sample(
    run_dir: Path,
    registry: dict,
    out: Path | None = None,
    device: str | None = None,
    seed: int | None = None,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Draw from a fitted generative model into ``out`` (default: the run folder, whose
    sample files are replaced; another folder must be new or empty unless ``overwrite``)."""
    if out is not None and Path(out).resolve() != Path(run_dir).resolve():
        outputs.check_folder(out, overwrite)
    workflow, problem = load_run(run_dir, registry, device)
    out = Path(run_dir) if out is None else Path(out)
    if files.entry(out, "--out") is not None and not out.is_dir():
        raise UserError(f"--out {out} is a file, not a folder")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"cannot make {out}: {e.strerror or e}") from None
    if not writable(out):
        raise UserError(f"cannot write into {out} (read-only): choose another --out")
    seed_draws(workflow, seed)
    with problem.scope(), outputs.not_busy(out):
        try:
            return workflow.sample(problem, out)
        except OSError as e:
            raise os_error(e, "the samples") from None
