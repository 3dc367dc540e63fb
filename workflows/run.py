"""Running a workflow end to end: fit, summarize, draw, evaluate, predict, from a run folder.

A run folder holds ``config.json`` (the command's options), ``checkpoint.pt``,
``metrics.jsonl``, ``summary.json`` and the figures.
"""

from __future__ import annotations

import argparse
import json
import math
from dataclasses import fields
from pathlib import Path
from typing import Any

from bayesdl.inference import distributed
from bayesdl.inference.errors import UserError
from bayesdl.inference.predictive import posterior_summary
from bayesdl.inference.train import CHECKPOINT, FitConfig, FitResult, fit, restore
from bayesdl.workflows.base import Problem, Workflow

CONFIG = "config.json"
SUMMARY = "summary.json"
EVALUATION = "evaluation.json"


def fit_config(args: argparse.Namespace) -> FitConfig:
    """The engine's settings from parsed options (every FitConfig field is an option)."""
    return FitConfig(
        **{f.name: getattr(args, f.name) for f in fields(FitConfig) if hasattr(args, f.name)}
    )


def _jsonable(v: Any) -> Any:
    if isinstance(v, Path):
        return str(v)
    if isinstance(v, float) and not math.isfinite(v):
        return None if math.isnan(v) else ("inf" if v > 0 else "-inf")
    if isinstance(v, dict):
        return {k: _jsonable(x) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [_jsonable(x) for x in v]
    return v


def write_json(path: Path, obj: Any) -> None:
    """Write JSON atomically (tmp + rename)."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(_jsonable(obj), indent=2) + "\n")
    tmp.replace(path)


def fit_problem(
    problem: Problem,
    config: FitConfig,
    out: Path | None = None,
    *,
    resume: bool = False,
    progress: bool = True,
) -> FitResult:
    """Fit a built problem with the engine, its data size and data hook included."""
    return fit(
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


def run_fit(
    workflow_cls: type[Workflow],
    args: argparse.Namespace,
    out: Path,
    *,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """Fit a registered model into ``out`` and write its summary and figures."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} is a file, not a folder")
    if (out / CHECKPOINT).exists() and not (resume or overwrite):
        raise UserError(
            f"{out} already holds a run: add --resume to continue it, --overwrite to replace it, "
            "or choose another --out"
        )
    config = fit_config(args)
    config.validate()
    workflow = workflow_cls(args)
    problem = workflow.build()
    main = distributed.is_main()  # under torchrun only rank 0 writes the run folder
    out.mkdir(parents=True, exist_ok=True)
    if overwrite and not resume and main:
        for name in (CHECKPOINT, "metrics.jsonl", SUMMARY, EVALUATION):
            (out / name).unlink(missing_ok=True)
    if main:
        write_json(out / CONFIG, {"model": workflow_cls.name, "args": vars(args)})
    result = fit_problem(problem, config, out, resume=resume, progress=progress)
    summary: dict[str, Any] = {
        "model": workflow_cls.name,
        "guide": getattr(args, "guide", None),
        "estimator": config.estimator,
        "steps": result.steps,
        "final_elbo": result.final_elbo,
        "wall_seconds": round(result.wall_seconds, 3),
        "device": result.device,
        "seed": config.seed,
        "particles": config.particles,
        "batch_size": config.batch_size,
        "processes": distributed.world_size(),
    }
    if not main:
        return summary
    summary["posterior"] = posterior_summary(problem.guide, _on(problem.data, result.device))
    summary.update(workflow.summarize(problem))
    summary["figures"] = workflow.figures(problem, out)
    write_json(out / SUMMARY, summary)
    return summary


def _on(data: dict[str, Any], device: str) -> dict[str, Any]:
    return {k: v.to(device) if hasattr(v, "to") else v for k, v in data.items()}


def load_run(
    run_dir: str | Path,
    registry: dict,
    device: str | None = None,
    overrides: dict[str, Any] | None = None,
):
    """Rebuild a finished (or interrupted) run: its workflow and problem, parameters restored.

    ``overrides`` replace options of the run's fit command (e.g. ``{"iw_samples": 100}`` for
    ``bayesdl evaluate --iw-samples``); an option the model does not have is a UserError.
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise UserError(f"{run_dir} is not a run folder")
    cfg_path = run_dir / CONFIG
    if not cfg_path.exists() or not (run_dir / CHECKPOINT).exists():
        raise UserError(f"{run_dir} holds no fitted run (no {CONFIG} or {CHECKPOINT})")
    cfg = json.loads(cfg_path.read_text())
    if cfg["model"] not in registry:
        raise UserError(
            f"{run_dir} was made by model {cfg['model']!r}, which is not registered here "
            "(a --plugin file missing?)"
        )
    saved = {k: float(v) if v in ("inf", "-inf") else v for k, v in cfg["args"].items()}
    # options added since the run was made take their defaults
    args = argparse.Namespace(**{**registry[cfg["model"]].option_defaults(), **saved})
    if device is not None:
        args.device = device
    for key, value in (overrides or {}).items():
        if not hasattr(args, key):
            option = "--" + key.replace("_", "-")
            raise UserError(f"model {cfg['model']!r} has no option {option}")
        setattr(args, key, value)
    workflow = registry[cfg["model"]](args)
    problem = workflow.build()
    dev = restore(problem.model, problem.guide, problem.data, run_dir / CHECKPOINT, args.device)
    problem.data = _on(problem.data, str(dev))
    return workflow, problem


def evaluate_run(
    run_dir: Path,
    registry: dict,
    device: str | None = None,
    overrides: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Held-out metrics of a run, saved to ``evaluation.json``."""
    workflow, problem = load_run(run_dir, registry, device, overrides)
    result = workflow.evaluate(problem, Path(run_dir))
    write_json(Path(run_dir) / EVALUATION, result)
    return result


def predict_run(run_dir: Path, registry: dict, path: Path, device: str | None = None) -> dict:
    """Posterior predictive of a run for new inputs."""
    workflow, problem = load_run(run_dir, registry, device)
    return workflow.predict(problem, Path(path))


def sample_run(
    run_dir: Path, registry: dict, out: Path | None = None, device: str | None = None
) -> dict[str, Any]:
    """Draw from a fitted generative model into ``out`` (default: the run folder)."""
    workflow, problem = load_run(run_dir, registry, device)
    out = Path(run_dir) if out is None else Path(out)
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} is a file, not a folder")
    out.mkdir(parents=True, exist_ok=True)
    return workflow.sample(problem, out)
