"""Where the user's model is defined: its file and line, for messages and warnings.

A model given from Python (a function in the user's script, ``__main__`` included, or a
``PyroModule``) is wrapped by bayesdl's own classes; a message must still name the user's file
and line, never bayesdl's. Handlers such as ``config_enumerate`` keep the function under
``__wrapped__``.
"""

from __future__ import annotations

import inspect
import warnings
from collections.abc import Callable
from typing import Any

import torch


def definition(fn: Any) -> tuple[str, int] | None:
    """``(file, line)`` of the ``def`` of a model function (of ``forward`` for a module, of
    ``__call__`` for another callable object); ``None`` where Python cannot tell (a function
    typed at the prompt, a builtin)."""
    if not callable(fn):
        return None
    target = inspect.unwrap(fn)
    if isinstance(target, torch.nn.Module):
        target = type(target).forward
    elif not (inspect.isfunction(target) or inspect.ismethod(target)):
        target = type(target).__call__
    try:
        path = inspect.getsourcefile(target)
        _, line = inspect.getsourcelines(target)
    except (TypeError, OSError):
        return None
    return (path, line) if path else None


def warn_at(message: str, category: type[Warning], fn: Callable | None) -> None:
    """Warn as from the ``def`` of the model ``fn`` (Python shows that line under the message),
    or on one line (``bayesdl:0``) where it cannot be found."""
    place = definition(fn) if fn is not None else None
    path, line = place if place else ("bayesdl", 0)
    warnings.warn_explicit(message, category, path, line)
