"""The workflow class of a user's model: a function in a file (``fit FILE.py:function``), a
function given from Python (``bayesdl.fit(fn, data=...)``), or the model a run folder names.

Each is a subclass of :class:`~bayesdl.workflows.user_model.UserModel` made on the fly (not
registered); a network of :func:`bayesdl.bnn.bayesian` gets
:class:`~bayesdl.workflows.bayesian_net.BayesianNetModel`.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import bayesdl.workflows.trust as trust
from bayesdl.inference import files
from bayesdl.inference.errors import UserError
from bayesdl.workflows.user_code import load_function, load_plugins, split_spec
from bayesdl.workflows.user_model import UserModel


def file_workflow(spec: str, path: str | None = None, function: str | None = None) -> type:
    """A :class:`UserModel` class for the function ``spec = file.py:function`` (not registered;
    ``path``/``function`` override the spec, e.g. the absolute path a run saved)."""
    if path is None or function is None:
        path, function = split_spec(spec)
    fn = load_function(path, function)
    doc = (inspect.getdoc(fn) or "").strip().splitlines()
    return type(
        "UserFileModel",
        (UserModel,),
        {
            "name": spec,
            "description": doc[0] if doc else f"{function} from {path}",
            "model_fn": staticmethod(fn),
            "model_file": str(Path(path).expanduser().resolve()),
            "model_function": function,
            "__module__": UserModel.__module__,  # not a plugin's class (UserModel.source)
            "__doc__": f"The model {function} of {path}.",
        },
    )


def python_workflow(fn: Callable, data: dict[str, Any] | None) -> type:
    """A :class:`UserModel` class for a model function given from Python, with its data.

    A function importable from a file (not ``__main__``) is recorded by path and name so that
    its run can be reopened from the shell; one defined interactively is recorded by name only
    (reopen it with ``bayesdl.load(dir, model=fn)``).
    """
    if not callable(fn):
        raise UserError(
            f"model must be a Pyro model function or PyroModule, got {type(fn).__name__}"
        )
    if data is not None and not isinstance(data, dict):
        raise UserError(
            f"data must be a dict of the model's keyword arguments, got {type(data).__name__}"
        )
    name = getattr(fn, "__name__", None) or type(fn).__name__
    path = None
    module = getattr(fn, "__module__", None)
    if module not in (None, "__main__") and inspect.isfunction(fn):
        try:
            path = inspect.getsourcefile(fn)
        except TypeError:
            path = None
    if path is not None and not Path(path).is_file():
        path = None
    doc = (inspect.getdoc(fn) or "").strip().splitlines() if inspect.isfunction(fn) else []
    spec = f"{path}:{name}" if path else f"python:{name}"
    base = UserModel
    from bayesdl.models.bayesian_net import BayesianNet

    if isinstance(fn, BayesianNet):  # bayesdl.bnn.bayesian(net): its own guide and reports
        from bayesdl.workflows.bayesian_net import BayesianNetModel as base
    return type(
        "PythonModel",
        (base,),
        {
            "name": spec,
            "description": doc[0] if doc else f"{name}, a Pyro model given from Python",
            "model_fn": staticmethod(fn),
            "model_file": str(Path(path).resolve()) if path else None,
            "model_function": name,
            "given_data": dict(data or {}),
            "__module__": UserModel.__module__,  # not a plugin's class (UserModel.source)
            "__doc__": f"The model {name} given from Python.",
        },
    )


def run_registry(run_dir: str | Path, registry: dict, plugins: Iterable[str] = ()) -> dict:
    """The registry a saved run needs, importing no code because its ``config.json`` names it.

    ``plugins`` are the ``--plugin`` files the user passes now (a plugin's run needs them again:
    the plugins listed in ``config.json`` are not imported). A built-in model's run imports
    nothing; a run of ``fit FILE.py:FUNCTION`` imports that file only if this user fitted it
    (or names it now, ``--model-file``), by :mod:`bayesdl.workflows.trust`'s rule.
    """
    from bayesdl.workflows.run_files import CONFIG, read_config

    load_plugins(plugins)
    cfg_path = Path(run_dir) / CONFIG
    if not files.is_dir(run_dir, "run folder") or files.entry(cfg_path) is None:
        return registry  # load_run says what is wrong with the folder
    cfg = read_config(run_dir)
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
