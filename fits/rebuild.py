"""A run folder's workflow rebuilt from its ``config.json``, by any method: the registry the
run needs (importing no code because the folder names it), its options as saved (options added
since take their defaults), its problem built again. What each method restores on top (a
checkpoint, draws): :mod:`bayesdl.fits.svi`, :mod:`bayesdl.fits.nuts`."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from bayesdl.fits import records
from bayesdl.fits.base import build
from bayesdl.fits.records import CONFIG
from bayesdl.inference import files
from bayesdl.inference.errors import UserError
from bayesdl.workflows import trust
from bayesdl.workflows.base import Problem, Workflow, start
from bayesdl.workflows.fit_options import FitOptions, from_record
from bayesdl.workflows.user_classes import file_workflow
from bayesdl.workflows.user_code import load_plugins


def run_registry(run_dir: str | Path, registry: dict, plugins: Iterable[str] = ()) -> dict:
    """The registry a saved run needs, importing no code because its ``config.json`` names it.

    ``plugins`` are the ``--plugin`` files the user passes now (a plugin's run needs them again:
    the plugins listed in ``config.json`` are not imported). A built-in model's run imports
    nothing; a run of ``fit FILE.py:FUNCTION`` imports that file only if this user fitted it
    (or names it now, ``--model-file``), by :mod:`bayesdl.workflows.trust`'s rule.
    """
    load_plugins(plugins)
    cfg_path = Path(run_dir) / CONFIG
    if not files.is_dir(run_dir, "run folder") or files.entry(cfg_path) is None:
        return registry  # load_run says what is wrong with the folder
    cfg = records.read_config(run_dir)
    args, model = cfg["args"], cfg["model"]
    if model in registry:
        return registry
    model_file, function = args.get("model_file"), args.get("model_function")
    if model_file and function:
        with trust.folder_code(cfg_path, cfg):
            return {**registry, model: file_workflow(model, str(model_file), str(function))}
    named = [str(f) for f in args.get("plugin") or []]
    if named:
        files_ = " ".join(f"--plugin {f}" for f in named)
        raise UserError(
            f"{run_dir} was fitted with model {model!r} of a plugin; bayesdl does not import "
            f"the files a run folder names: if you trust it, add {files_}"
        )
    return registry


def load_workflow(
    run_dir: str | Path,
    registry: dict,
    device: str | None = None,
    overrides: dict[str, Any] | None = None,
    *,
    guided: bool = True,
) -> tuple[Workflow, Problem]:
    """A run's workflow and problem rebuilt from its ``config.json``, nothing restored.

    ``overrides`` replace options of the run's fit command (e.g. ``{"iw_samples": 100}`` for
    ``bayesdl evaluate --iw-samples``); an option the model does not have is a UserError.
    ``guided``: as :func:`~bayesdl.fits.base.build` (false for a run drawn without a guide).
    """
    run_dir = Path(run_dir)
    if not files.is_dir(run_dir, "run folder"):
        raise UserError(f"{run_dir} is not a run folder")
    records.check_folder(run_dir)
    if files.entry(run_dir / CONFIG) is None:
        raise UserError(f"{run_dir} holds no fitted run (no {CONFIG})")
    cfg = records.read_config(run_dir)
    if cfg["model"] not in registry and cfg["model"].startswith("python:"):
        raise UserError(
            f"{run_dir} holds a model defined interactively in Python ({cfg['model'][7:]}), "
            "which no file holds: reopen it from Python with bayesdl.load(dir, model=fn) (a "
            "PyroModule is found again when its file binds it to a module-level name, "
            "model = Net(), and you fit that)"
        )
    if cfg["model"] not in registry:
        raise UserError(
            f"{run_dir} was made by model {cfg['model']!r}, which is not registered here "
            "(a --plugin file missing?)"
        )
    workflow_cls = registry[cfg["model"]]
    records.check_args(workflow_cls, cfg, run_dir / CONFIG)
    options = saved_options(workflow_cls, cfg, run_dir, device, overrides)
    with trust.folder_code(run_dir / CONFIG, cfg):  # imports only code the user fitted or names
        workflow = start(workflow_cls, options)
        workflow.run_dir = run_dir
        return workflow, build(workflow, guided=guided)


def saved_options(
    workflow_cls: type[Workflow],
    cfg: dict[str, Any],
    run_dir: Path,
    device: str | None = None,
    overrides: dict[str, Any] | None = None,
) -> FitOptions:
    """The options a run was made with (options added since at their defaults:
    :func:`~bayesdl.workflows.fit_options.from_record`), its data file in the folder for data
    given from Python, then ``device`` and ``overrides`` (an option the model does not have is
    a UserError)."""
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
