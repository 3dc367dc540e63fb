"""A fitted guide that carries its own parameters into Pyro's tools.

Each fit owns a parameter store (``pyro.get_param_store().scope(state)``, see
:func:`bayesdl.inference.train.fit`), so two fits of one model never share parameters, although
their autoguides' parameters have the same names (``AutoNormal.locs.mu``). A guide called
outside that store reads Pyro's *global* store instead: ``Predictive(model, guide=guide)`` would
copy the first fit's values there and every later fit's guide would then draw the first fit's
posterior, or a guide function's ``pyro.param`` would start again from its initial value.
:class:`ScopedGuide` runs every call of the guide (and of its methods, e.g. an autoguide's
``median()`` or ``quantiles()``) inside its own fit's store.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from typing import Any

from pyro.nn import PyroModule


class ScopedGuide:
    """``guide`` whose calls run inside ``scope()`` (its fit's parameter store).

    Usable wherever Pyro takes a guide: ``Predictive(model, guide=post.guide)``,
    ``poutine.trace(post.guide)``; attributes are the guide's (``post.guide.locs``), methods
    run in the scope too; ``.unwrapped`` is the guide object itself (its parameters are read
    from the store that is current when it is called).
    """

    def __init__(self, guide: Callable, scope: Callable[[], AbstractContextManager]):
        self.__dict__["unwrapped"] = guide
        self.__dict__["_scope"] = scope

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        with self._scope():
            return self.unwrapped(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        with self._scope():
            value = getattr(self.unwrapped, name)
        if inspect.ismethod(value):  # e.g. AutoNormal.median(): reads the parameters

            @functools.wraps(value)
            def scoped(*args: Any, **kwargs: Any) -> Any:
                with self._scope(), _reading_store(self.unwrapped):
                    return value(*args, **kwargs)

            return scoped
        return value

    def __setattr__(self, name: str, value: Any) -> None:
        setattr(self.unwrapped, name, value)

    def __repr__(self) -> str:
        return f"{self.unwrapped!r} (with its fit's parameters)"


def _reading_store(guide: Any) -> AbstractContextManager:
    """A ``PyroModule``'s own context, in which its ``PyroParam`` attributes are read from the
    current parameter store (outside it, from the module's last copy)."""
    context = getattr(guide, "_pyro_context", None)
    return context if isinstance(guide, PyroModule) and context is not None else nullcontext()
