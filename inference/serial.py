"""Fits from several threads run one after another.

Pyro keeps its effect handlers on one process-wide stack (``pyro.poutine.runtime._PYRO_STACK``,
a module global, not a thread-local), its parameter store is one global object, and torch's
default random generator is one per process. Two fits in two threads push their handlers onto
the same stack: each sees the other's plates and sample sites ("duplicate plate", "Multiple
sample sites named 'a'") or, worse, fits quietly on the other's noise. True parallelism in
threads is not possible without patching Pyro; the honest answer is a lock. Every public call
that runs a model (:func:`bayesdl.fit`, :func:`bayesdl.load`, :func:`bayesdl.compare`, the
engine's ``fit`` / ``restore`` and every public method of a posterior) holds one re-entrant,
process-wide lock, so calls from several threads run one at a time, each exactly as it would
alone (with the same seed, the same numbers). For parallel fits use processes.
"""

from __future__ import annotations

import functools
import inspect
import threading
from collections.abc import Callable
from typing import TypeVar

#: held while bayesdl runs a model, a guide or Pyro's machinery (re-entrant: nested calls pass)
PYRO_LOCK = threading.RLock()

F = TypeVar("F", bound=Callable)
C = TypeVar("C", bound=type)


def one_at_a_time(fn: F) -> F:
    """Decorator: ``fn`` runs holding :data:`PYRO_LOCK`."""

    @functools.wraps(fn)
    def locked(*args, **kwargs):
        with PYRO_LOCK:
            return fn(*args, **kwargs)

    return locked  # type: ignore[return-value]


def serialised(cls: C) -> C:
    """Class decorator: every public method and property of ``cls`` (and ``__repr__``) runs
    holding :data:`PYRO_LOCK` (a subclass that overrides one decorates itself too)."""
    for name, attr in list(vars(cls).items()):
        if name.startswith("_") and name != "__repr__":
            continue
        if isinstance(attr, property) and attr.fget is not None:
            locked = property(one_at_a_time(attr.fget), attr.fset, attr.fdel, attr.__doc__)
            setattr(cls, name, locked)
        elif inspect.isfunction(attr):
            setattr(cls, name, one_at_a_time(attr))
    return cls
