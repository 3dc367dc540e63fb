"""Running a workflow end to end: fit, summarize, draw, evaluate, predict, from a run folder.

A run folder holds ``config.json`` (the command's options), ``checkpoint.pt``,
``metrics.jsonl``, ``summary.json`` and the figures. Every function here is shared by the
command line and the Python API (:func:`bayesdl.fit`, :func:`bayesdl.load`).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import math
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyro
import torch

from bayesdl.inference import distributed, files
from bayesdl.inference.convergence import warn_unconverged
from bayesdl.inference.errors import UserError
from bayesdl.inference.moments import posterior_table
from bayesdl.inference.train import (
    CHECKPOINT,
    MAX_SEED,
    METRICS,  # noqa: F401  (sampling, posterior and draws take it from here)
    FitConfig,
    FitResult,
    fit,
    restore,
)
from bayesdl.workflows import outputs, run_files, trust
from bayesdl.workflows.base import Problem, Workflow, start
from bayesdl.workflows.checks import vi_checks
from bayesdl.workflows.fit_options import FitOptions, from_record
from bayesdl.workflows.run_files import (
    CONFIG,
    DATA_FILE,
    EVALUATION,
    LOCK,
    PROTOTYPE,
    RUN_FILES,
    SUMMARY,
)

#: options that may change when a run is resumed (they do not change the fit's result)
RESUMABLE = {
    "steps",
    "log_every",
    "checkpoint_every",
    "device",
    "threads",
    "check_args",
    "compile",
}


def _jsonable(v: Any) -> Any:
    if isinstance(v, Path):
        return str(v)
    if isinstance(v, float) and not math.isfinite(v):
        return None if math.isnan(v) else ("inf" if v > 0 else "-inf")
    if isinstance(v, dict):
        return {k: _jsonable(x) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [_jsonable(x) for x in v]
    if torch.is_tensor(v):
        return _jsonable(v.detach().cpu().tolist())
    return v


def json_text(obj: Any) -> str:
    """``obj`` as bayesdl's JSON files hold it (tensors as lists, infinities as strings)."""
    import json

    return json.dumps(_jsonable(obj), indent=2) + "\n"


def write_json(path: Path, obj: Any) -> None:
    """Write JSON atomically (see :func:`write_text`)."""
    write_text(path, json_text(obj))


def write_text(path: Path, text: str) -> None:
    """Write a file of a run folder atomically (:func:`bayesdl.inference.files.write_text`: a
    fresh temporary file, then a rename): never through a symbolic link, never into a pipe or a
    device (a UserError). A failure is a :class:`UserError` naming the file."""
    files.write_text(path, text)


def os_error(e: OSError, what: str) -> UserError:
    """A :class:`UserError` for an ``OSError`` while writing ``what``, naming its file."""
    where = f" ({e.filename})" if getattr(e, "filename", None) else ""
    return UserError(f"cannot write {what}{where}: {e.strerror or e}")


#: run folders this process holds (see :func:`locked`)
_HELD: set[Path] = set()


def _busy(out: Path) -> UserError:
    return UserError(
        f"another bayesdl process is writing {out}; wait for it or choose another --out"
    )


@contextmanager
def locked(out: Path) -> Iterator[None]:
    """Hold the run folder ``out`` for this process: a second writer gets a UserError."""
    flags = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
    try:
        fd = os.open(out / LOCK, flags, 0o644)
    except OSError as e:
        raise UserError(f"cannot write into {out}: {files._why(e)} ({LOCK})") from None
    key = out.resolve()
    try:
        files.check_plain(out / LOCK, "the lock")
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            if e.errno in (errno.EAGAIN, errno.EACCES):
                raise _busy(out) from None
            raise UserError(f"cannot lock {out / LOCK}: {e.strerror or e}") from None
        _HELD.add(key)
        yield
    finally:
        _HELD.discard(key)
        os.close(fd)


def _check_not_busy(out: Path) -> None:
    """Refuse a run folder that another process holds (see :func:`locked`), without taking
    it: a run being written is "busy", not "already there"."""
    if not out.is_dir() or out.resolve() in _HELD:
        return
    try:
        fd = os.open(out / LOCK, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:  # no lock file (or an unreadable one, which locked() reports)
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError as e:
        if e.errno in (errno.EAGAIN, errno.EACCES):
            raise _busy(out) from None
    finally:
        os.close(fd)  # closing drops the shared lock


def prepare_out(out: Path, *, resume: bool, overwrite: bool, make: bool = True) -> None:
    """Check the run folder ``out`` (and make it unless ``make`` is false), refusing to replace
    anything in it without ``overwrite`` (and any of its files that is a link or a special file
    without ``overwrite``, which removes them)."""
    if files.entry(out, "--out") is not None and not files.is_dir(out, "--out"):
        raise UserError(f"--out {out} is a file, not a folder")
    _check_not_busy(out)
    if out.is_dir() and not overwrite:
        run_files.check_folder(out)
    existing = [n for n in RUN_FILES if files.entry(out / n) is not None]
    if resume and not (out / CHECKPOINT).exists():
        raise UserError(f"--resume: {out} holds no checkpoint to continue")
    if existing and not (resume or overwrite):
        how = (
            ": add --resume to continue it, --overwrite to replace it"
            if CHECKPOINT in existing
            else " but no checkpoint to resume from: add --overwrite to replace it"
        )
        raise UserError(
            f"{out} already holds a run ({', '.join(existing)}){how}, or choose another --out"
        )
    if not make:
        parent = next((p for p in (out, *out.parents) if p.exists()), Path("."))
        if not parent.is_dir():
            raise UserError(f"--out {out}: {parent} is a file, not a folder")
        if not os.access(parent, os.W_OK):
            raise UserError(f"cannot write into {parent} (read-only)")
        return
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"cannot make the run folder {out}: {e.strerror or e}") from None
    if not os.access(out, os.W_OK):
        raise UserError(f"cannot write into the run folder {out} (read-only)")


def check_resume(out: Path, record: dict) -> None:
    """Refuse to continue a run with other options or other data than it was started with."""
    if files.entry(out / CONFIG) is None:
        raise UserError(f"--resume: {out / CONFIG} is missing")
    old = read_config(out)
    old_args = old["args"]
    if old.get("model") != record["model"]:
        raise UserError(
            f"--resume: {out} is a run of model {old.get('model')!r}, not {record['model']!r}"
        )
    new_args = _jsonable(record["args"])
    changed = sorted(
        k
        for k in set(old_args) | set(new_args)
        if k not in RESUMABLE and old_args.get(k) != new_args.get(k)
    )
    if old.get("data_sha256") != record.get("data_sha256"):
        changed.append("data (the file's contents changed)")
    changed += _changed_code(old, record)
    if changed:
        shown = ", ".join(
            f"--{k.replace('_', '-')} {old_args.get(k)!r} -> {new_args.get(k)!r}"
            if k in old_args or k in new_args
            else k
            for k in changed
        )
        raise UserError(
            f"--resume with other settings than the run in {out} was made with ({shown}); "
            "resume with the same options, data and code, or fit into a new --out"
        )


def _changed_code(old: dict, record: dict) -> list[str]:
    """The code files of ``record`` (``model_file``, ``guide_file``, ``net_file``: each
    ``{"path", "sha256"}``) whose sha256 is not the one the run recorded: a checkpoint of other
    code. A run of an older bayesdl that recorded no sha256 cannot be checked and passes."""
    out = []
    for key, new in record.items():
        if not (isinstance(new, dict) and "sha256" in new):
            continue
        before = old.get(key)
        recorded = before.get("sha256") if isinstance(before, dict) else None
        if recorded is not None and recorded != new["sha256"]:
            what = key.replace("_", " ")
            out.append(f"the {what} {new.get('path')} changed since the run began (its sha256)")
    return out


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


@dataclass
class Run:
    """A fitted workflow: its options, problem (model, guide, data, parameters), the engine's
    result and the summary written to ``summary.json``."""

    workflow: Workflow
    problem: Problem
    result: FitResult | None
    summary: dict[str, Any]
    out: Path | None = None


def build(workflow: Workflow) -> Problem:
    """Build a workflow's problem in a throwaway param store (trial runs of the user's model
    create parameters that must not leak into the fit)."""
    with pyro.get_param_store().scope():
        return workflow.build()


def run_record(workflow: Workflow) -> dict[str, Any]:
    """What ``config.json`` records: the model's name, its options (those of the workflow's
    :class:`FitOptions`, derived values included: :meth:`Workflow.recorded_args`) and the
    data's checksum."""
    record = {"model": type(workflow).name, "args": workflow.recorded_args()}
    record.update(workflow.record())
    return record


def folder_record(workflow: Workflow) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """What a run folder records (:func:`run_record`), and the arrays of data given from
    Python, which the folder keeps as ``data.npz`` (its options then name that file; scalars
    become ``--arg name=value``), so that ``bayesdl.load``, ``evaluate`` and ``predict`` find
    them. Write both with :func:`write_record`."""
    import json

    record, arrays = run_record(workflow), {}
    given = getattr(workflow, "given_data", None)
    if given is None:
        return record, arrays
    args = dict(record["args"])
    extra = list(args.get("arg") or [])
    for k, v in given.items():
        if torch.is_tensor(v):
            arrays[k] = v.detach().cpu().numpy()
        elif isinstance(v, np.ndarray):
            arrays[k] = v
        elif v is None or isinstance(v, bool | int | float | str):
            extra.append(f"{k}={json.dumps(v)}")
        else:
            raise UserError(
                f"cannot save data[{k!r}] ({type(v).__name__}): a run folder holds arrays and "
                "scalars only"
            )
    record["args"] = {**args, "data": DATA_FILE, "arg": extra}
    record["data_in_run"] = DATA_FILE
    return record, arrays


def write_record(out: Path, record: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
    """``config.json`` (and ``data.npz`` for data given from Python) of :func:`folder_record`;
    the code files it names join this user's record of fitted code (:func:`trust.remember`)."""
    if record.get("data_in_run"):
        files.write_with(out / DATA_FILE, lambda f: np.savez(f, **arrays))
    write_json(out / CONFIG, record)
    trust.remember(record)


def fit_run(
    workflow_cls: type[Workflow],
    options: FitOptions,
    out: Path | None,
    *,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = True,
) -> Run:
    """Fit a registered model with ``options`` (into the run folder ``out`` when given:
    config, metrics, checkpoint, summary, figures)."""
    if options.method == "nuts":  # Pyro's NUTS sampler instead of a guide
        from bayesdl.workflows.sampling import nuts_run

        return nuts_run(
            workflow_cls, options, out, resume=resume, overwrite=overwrite, progress=progress
        )
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


@contextmanager
def claimed(out: Path, *, resume: bool, overwrite: bool, main: bool = True) -> Iterator[None]:
    """Hold the run folder ``out`` while a run writes it: made, locked, checked again under the
    lock (another process may have finished a run there since), emptied for ``overwrite``;
    removed again when this call made it and the run fails before writing anything.
    Processes other than rank 0 (``main`` false) touch nothing."""
    created = not out.exists()
    if main:
        prepare_out(out, resume=resume, overwrite=overwrite)
    try:
        with locked(out) if main else _nothing():
            if main:
                prepare_out(out, resume=resume, overwrite=overwrite)
                files.remove_temporaries(out, RUN_FILES)  # of a process killed mid-write
            if main and overwrite and not resume:
                try:
                    for name in RUN_FILES:
                        files.remove(out / name)
                except UserError as e:
                    raise UserError(f"--overwrite: {e}") from None
                run_files.check_folder(out)
            yield
    except BaseException:
        if main and created:  # a folder this call made and left empty: remove it again
            with contextlib.suppress(OSError):  # (a folder made read-only meanwhile)
                (out / LOCK).unlink(missing_ok=True)
                out.rmdir()
        raise


def _fit_locked(
    workflow: Workflow,
    problem: Problem,
    config: FitConfig,
    out: Path,
    resume: bool,
    progress: bool,
) -> Run:
    """:func:`fit_run`'s part that holds the run folder (see :func:`claimed`)."""
    main = distributed.is_main()
    record, arrays = folder_record(workflow)
    if resume and main:
        check_resume(out, record)
        run_files.check_args(type(workflow), read_config(out), out / CONFIG)
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


@contextmanager
def _nothing() -> Iterator[None]:
    yield


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
            _posterior_guide(workflow, problem),
            _on(problem.data, result.device),
            config.seed,
        )
        summary["params"] = _jsonable(model_params(problem, max_elements=100))
        summary.update(workflow.summarize(problem))
        guide = _posterior_guide(workflow, problem)
        summary.update(
            vi_checks(workflow, problem, guide, result.convergence, config.seed, config.batch_size)
        )
    return summary


def _posterior_guide(workflow: Workflow, problem: Problem):
    pick = getattr(workflow, "posterior_guide", None)  # e.g. the Laplace approximation
    return pick(problem) if pick is not None else problem.guide


def _name(guide: Any) -> Any:
    return guide if guide is None or isinstance(guide, str) else getattr(guide, "__name__", "guide")


def model_params(problem: Problem, max_elements: int | None = None) -> dict[str, torch.Tensor]:
    """The constrained values of the ``pyro.param`` sites of the *model* (not the guide's),
    read in the problem's param store; sites above ``max_elements`` are left out."""
    from pyro import poutine

    with problem.scope(), torch.no_grad(), poutine.trace(param_only=True) as tr:
        guide_tr = poutine.trace(problem.guide).get_trace(**problem.data)
        poutine.replay(problem.model, trace=guide_tr)(**problem.data)
    with problem.scope(), torch.no_grad(), poutine.trace(param_only=True) as gtr:
        poutine.trace(problem.guide).get_trace(**problem.data)
    out = {}
    for name, site in tr.trace.nodes.items():
        if site["type"] != "param" or name in gtr.trace.nodes:
            continue
        value = site["value"].detach()
        if max_elements is None or value.numel() <= max_elements:
            out[name] = value
    return out


def _on(data: dict[str, Any], device: str) -> dict[str, Any]:
    return {k: v.to(device) if hasattr(v, "to") else v for k, v in data.items()}


def read_config(run_dir: Path) -> dict[str, Any]:
    """``config.json`` of a run folder, checked (:func:`run_files.read_config`)."""
    return run_files.read_config(run_dir)


def load_run(
    run_dir: str | Path,
    registry: dict,
    device: str | None = None,
    overrides: dict[str, Any] | None = None,
    prototype: bool = False,
):
    """Rebuild a finished (or interrupted) run: its workflow and problem, parameters restored
    into the problem's own param store (``problem.scope()``).

    ``overrides`` replace options of the run's fit command (e.g. ``{"iw_samples": 100}`` for
    ``bayesdl evaluate --iw-samples``); an option the model does not have is a UserError.
    ``prototype``: build from the run's ``prototype.npz`` (a few rows of the training data,
    enough for a model whose latents are all global) instead of re-reading the data file; a
    model whose parameters depend on the data size falls back to the whole data.
    """
    run_dir = Path(run_dir)
    if files.is_dir(run_dir, "run folder"):
        run_files.check_folder(run_dir)
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
    problem.data = _on(problem.data, str(dev))
    return workflow, problem


def load_workflow(
    run_dir: str | Path,
    registry: dict,
    device: str | None = None,
    overrides: dict[str, Any] | None = None,
) -> tuple[Workflow, Problem]:
    """A run's workflow and problem rebuilt from its ``config.json``, nothing restored (see
    :func:`load_run`; a NUTS run's draws: :mod:`bayesdl.workflows.sampling`)."""
    run_dir = Path(run_dir)
    if not files.is_dir(run_dir, "run folder"):
        raise UserError(f"{run_dir} is not a run folder")
    run_files.check_folder(run_dir)
    if files.entry(run_dir / CONFIG) is None:
        raise UserError(f"{run_dir} holds no fitted run (no {CONFIG})")
    cfg = read_config(run_dir)
    if cfg["model"] not in registry and cfg["model"].startswith("python:"):
        raise UserError(
            f"{run_dir} holds a model defined interactively in Python ({cfg['model'][7:]}), "
            "which no file holds: reopen it from Python with bayesdl.load(dir, model=fn)"
        )
    if cfg["model"] not in registry:
        raise UserError(
            f"{run_dir} was made by model {cfg['model']!r}, which is not registered here "
            "(a --plugin file missing?)"
        )
    workflow_cls = registry[cfg["model"]]
    run_files.check_args(workflow_cls, cfg, run_dir / CONFIG)
    options = saved_options(workflow_cls, cfg, run_dir, device, overrides)
    with trust.folder_code(run_dir / CONFIG, cfg):  # imports only code the user fitted or names
        workflow = start(workflow_cls, options)
        workflow.run_dir = run_dir
        return workflow, build(workflow)


def saved_options(
    workflow_cls: type[Workflow],
    cfg: dict[str, Any],
    run_dir: Path,
    device: str | None = None,
    overrides: dict[str, Any] | None = None,
) -> FitOptions:
    """The options a run was made with (options added since at their defaults:
    :func:`from_record`), its data file in the folder for data given from Python, then
    ``device`` and ``overrides`` (an option the model does not have is a UserError)."""
    options = from_record(workflow_cls, cfg["args"])
    changes = dict(overrides or {})
    if cfg.get("data_in_run"):  # data given from Python, saved in the run folder
        changes.setdefault("data", str(run_dir / Path(cfg["data_in_run"]).name))
    if device is not None:
        changes["device"] = device
    try:
        return options.replace(**changes)
    except KeyError as e:
        option = "--" + str(e.args[0]).replace("_", "-")
        raise UserError(f"model {cfg['model']!r} has no option {option}") from None


def evaluate_run(
    run_dir: Path,
    registry: dict,
    device: str | None = None,
    overrides: dict[str, Any] | None = None,
    seed: int | None = None,
) -> dict[str, Any]:
    """Held-out metrics of a run, saved to ``evaluation.json``."""
    from bayesdl.workflows import sampling

    if sampling.is_draws_run(run_dir):  # a NUTS run: its draws, no guide
        return sampling.evaluate_draws_run(Path(run_dir), registry, device, seed)
    workflow, problem = load_run(run_dir, registry, device, overrides)
    target = Path(run_dir) / EVALUATION
    if not _writable(Path(run_dir)) or (target.is_file() and not os.access(target, os.W_OK)):
        raise UserError(f"cannot write {target}: the run folder is read-only (evaluate a copy)")
    _seed(workflow, seed)
    with problem.scope():
        try:
            result = workflow.evaluate(problem, Path(run_dir))
        except OSError as e:
            raise os_error(e, "the evaluation") from None
    with outputs.not_busy(run_dir):  # a fit into the folder meanwhile: refused, not mixed
        write_json(target, result)
    return result


def _writable(folder: Path) -> bool:
    return os.access(folder, os.W_OK | os.X_OK)


def _seed(workflow: Workflow, seed: int | None) -> None:
    """Evaluation and prediction draw from the posterior: seed them (the run's seed by default)
    so that the same command gives the same numbers."""
    value = seed if seed is not None else workflow.engine.seed
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_SEED:
        raise UserError(f"--seed must be an integer from 0 to 2**32-1, got {value!r}")
    pyro.set_rng_seed(value)


def predict_run(
    run_dir: Path, registry: dict, path: Path, device: str | None = None, seed: int | None = None
) -> dict:
    """Posterior predictive of a run for new inputs."""
    from bayesdl.workflows import sampling

    if sampling.is_draws_run(run_dir):  # a NUTS run: its draws, no guide
        return sampling.predict_draws_run(Path(run_dir), registry, Path(path), device, seed)
    workflow, problem = load_run(run_dir, registry, device, prototype=True)
    _seed(workflow, seed)
    with problem.scope():
        return workflow.predict(problem, Path(path))


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
    if not _writable(out):
        raise UserError(f"cannot write into {out} (read-only): choose another --out")
    _seed(workflow, seed)
    with problem.scope(), outputs.not_busy(out):
        try:
            return workflow.sample(problem, out)
        except OSError as e:
            raise os_error(e, "the samples") from None
