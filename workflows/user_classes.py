"""The workflow class of a user's model: a function in a file (``fit FILE.py:function``), a
function given from Python (``bayesdl.fit(fn, data=...)``), or the model a run folder names.

Each is a subclass of :class:`~bayesdl.workflows.user_model.UserModel` made on the fly (not
registered); a network of :func:`bayesdl.bnn.bayesian` gets
:class:`~bayesdl.workflows.bayesian_net.BayesianNetModel`.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bayesdl.inference.errors import UserError
from bayesdl.workflows.user_code import load_function, split_spec
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


def _module_level(obj: Any) -> tuple[str, str] | None:
    """``(file, name)`` of a module-level name bound to this very object (a ``PyroModule``
    instance ``model = Net()`` in ``my_model.py``) in the module of its class; ``None`` if
    there is none (an object made in ``__main__`` or inside a function)."""
    import sys

    module = sys.modules.get(type(obj).__module__)
    if module is None or module.__name__ == "__main__":
        return None
    names = [k for k, v in vars(module).items() if v is obj and not k.startswith("_")]
    try:
        path = inspect.getsourcefile(module)
    except TypeError:
        return None
    return (path, names[0]) if names and path else None


def python_workflow(fn: Callable, data: dict[str, Any] | None) -> type:
    """A :class:`UserModel` class for a model function given from Python, with its data.

    A function importable from a file (not ``__main__``), or a ``PyroModule`` instance bound
    to a module-level name in the file of its class, is recorded by path and name so that its
    run can be reopened (:func:`bayesdl.load`, the shell) without ``model=``; one defined
    interactively is recorded by name only (reopen it with ``bayesdl.load(dir, model=fn)``).
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
    elif not inspect.isfunction(fn):  # a PyroModule (or other object) kept in a file
        path, name = _module_level(fn) or (None, name)
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
