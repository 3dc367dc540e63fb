"""Importing the user's Python files: a model file, a guide file, a ``--plugin`` file.

The bytes imported are read once and pass the rule of :mod:`bayesdl.workflows.trust`; any
failure is a :class:`UserError` naming the file and the line.
"""

from __future__ import annotations

import hashlib
import importlib.util
import inspect
import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from types import ModuleType

import bayesdl.workflows.trust as trust
from bayesdl.inference.errors import UserError
from bayesdl.workflows.user_errors import _describe


def load_module(path: str | Path) -> ModuleType:
    """Import a Python file by its path (once per path and contents); the bytes imported are
    read once and pass the rule of :mod:`bayesdl.workflows.trust` (while a run folder is
    loaded: only code this user fitted or names now). Any failure is a :class:`UserError`
    naming the file and the line."""
    full, code = trust.source(path)
    digest = trust.sha256(code)
    tag = hashlib.sha1(f"{full}\0{digest}".encode()).hexdigest()[:10]
    key = f"_bayesdl_user_{full.stem}_{tag}"
    if key in sys.modules:
        return sys.modules[key]
    spec = importlib.util.spec_from_file_location(key, full)
    module = importlib.util.module_from_spec(spec)
    sys.modules[key] = module
    if str(full.parent) not in sys.path:
        sys.path.append(str(full.parent))  # helpers next to the file import; ours come first
    try:
        exec(compile(code, str(full), "exec", dont_inherit=True), module.__dict__)  # noqa: S102
        trust.imported(full, digest)
    except UserError:
        del sys.modules[key]
        raise
    except BaseException as e:  # noqa: BLE001 - SyntaxError, ImportError, anything it raises
        del sys.modules[key]
        if isinstance(e, KeyboardInterrupt):
            raise
        raise UserError(f"cannot import {path}: {_describe(e, full)}") from None
    return module


def load_function(path: str | Path, name: str, what: str = "function") -> Callable:
    """The callable ``name`` defined in the file ``path``."""
    module = load_module(path)
    fn = getattr(module, name, None)
    if fn is None:
        defined = sorted(
            k
            for k, v in vars(module).items()
            if inspect.isfunction(v) and v.__module__ == module.__name__ and not k.startswith("_")
        )
        raise UserError(
            f"{path} has no {what} {name!r}; it defines: {', '.join(defined) or 'no functions'}"
        )
    if not callable(fn):
        raise UserError(f"{path}: {name!r} is a {type(fn).__name__}, not a {what}")
    return fn


def split_spec(spec: str, what: str = "function") -> tuple[str, str]:
    """``'dir/m.py:model'`` -> ``('dir/m.py', 'model')``."""
    path, sep, name = spec.rpartition(":")
    if not sep or not path.endswith(".py") or not name.isidentifier():
        raise UserError(
            f"name the {what} in the file: {spec.split(':')[0]}:FUNCTION, e.g. "
            f"{spec.split(':')[0]}:model"
        )
    return path, name


def plugin_paths(argv: Iterable[str]) -> list[str]:
    """The files named by ``--plugin FILE`` / ``--plugin=FILE`` in a command line."""
    argv, out = list(argv), []
    for i, a in enumerate(argv):
        if a == "--plugin" and i + 1 < len(argv):
            out.append(argv[i + 1])
        elif a.startswith("--plugin="):
            out.append(a.split("=", 1)[1])
    return out


def load_plugins(paths: Iterable[str]) -> None:
    """Import plugin files so that their ``@register`` classes join the registry."""
    for p in paths:
        load_module(p)
