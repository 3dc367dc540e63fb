"""What a static graph cannot follow, checked while the step of
:mod:`bayesdl.inference.compiled` is captured: a change of the model's structure between traces
(:func:`structure`) and a Python-side read of a tensor's value (:class:`ValueReads`).
"""

from __future__ import annotations

import os
import traceback
from collections.abc import Callable
from typing import Any

import pyro
import torch
from pyro import poutine
from torch.overrides import TorchFunctionMode


class Fallback(Exception):
    """The step cannot be compiled; the message says why (the fit continues eagerly)."""


def structure(model: Callable, guide: Callable, data: dict[str, Any]) -> tuple:
    """The static shape of one step: every sample and param site of guide and model, with its
    value's shape, dtype, observed flag and plates (name, size, dim, subsample size)."""
    with torch.no_grad(), pyro.validation_enabled(False):
        guide_tr = poutine.trace(guide).get_trace(**data)
        model_tr = poutine.trace(poutine.replay(model, trace=guide_tr)).get_trace(**data)
    sig = []
    for role, tr in (("guide", guide_tr), ("model", model_tr)):
        for name, site in tr.nodes.items():
            if site["type"] not in ("sample", "param"):
                continue
            value = site["value"]
            plates = tuple((f.name, f.size, f.dim) for f in site.get("cond_indep_stack", ()))
            sig.append(
                (
                    role,
                    name,
                    site["type"],
                    tuple(value.shape) if torch.is_tensor(value) else type(value).__name__,
                    str(value.dtype) if torch.is_tensor(value) else None,
                    bool(site.get("is_observed", False)),
                    plates,
                )
            )
    return tuple(sig)


def difference(a: tuple, b: tuple) -> str:
    """One phrase on how two :func:`structure` s differ."""
    names_a = [s[:2] for s in a]
    names_b = [s[:2] for s in b]
    if names_a != names_b:
        if len(names_a) != len(names_b):
            return f"the number of sites changes between traces ({len(names_a)} vs {len(names_b)})"
        return "the sites change between traces"
    for sa, sb in zip(a, b, strict=True):
        if sa != sb:
            return f"site {sa[1]!r} changes between traces ({sa[3]} vs {sb[3]})"
    return "the structure changes between traces"


#: the Python-side reads of a tensor's value (``__bool__``: ``if t:``, ``t > 0 and ...``;
#: ``__index__``: ``xs[t]``); ``.tolist()``, ``.numpy()`` and ``__array__`` read memory without
#: a dispatched op, so make_fx itself does not see them
_READS = frozenset(
    ("__bool__", "item", "__float__", "__int__", "__index__", "tolist", "numpy", "__array__")
)
#: frames in these are not the user's: torch, pyro, and the engine's capture (this module and
#: ``compiled.py`` beside it)
_LIBRARIES = tuple(os.path.dirname(m.__file__) + os.sep for m in (torch, pyro)) + (
    __file__,
    os.path.join(os.path.dirname(__file__), "compiled.py"),
)


def user_line(frames) -> str:
    """``file:line`` of the innermost frame outside torch, pyro and this module, or ``""``."""
    for frame in reversed(frames):
        if not frame.filename.startswith(_LIBRARIES):
            return f" at {os.path.relpath(frame.filename)}:{frame.lineno} ({frame.line})"
    return ""


def _depends_on_inputs(t: torch.Tensor) -> bool:
    """Whether the traced tensor ``t`` is computed from a graph input or from the graph's
    noise (a walk of the fx nodes it comes from). A tensor the trace does not know (not made
    by a traced op) and one made from constants alone do not."""
    from torch.fx.experimental.proxy_tensor import get_proxy_mode, get_proxy_slot

    mode = get_proxy_mode()
    slot = get_proxy_slot(t, mode.tracer, None) if mode is not None else None
    if slot is None:
        return False
    seen, todo = set(), [slot.proxy.node]
    while todo:
        node = todo.pop()
        if node in seen:
            continue
        seen.add(node)
        if node.op == "placeholder":
            return True
        target = node.target
        if isinstance(target, torch._ops.OpOverload) and (
            torch.Tag.nondeterministic_seeded in target.tags
        ):
            return True
        todo.extend(node.all_input_nodes)
    return False


class ValueReads(TorchFunctionMode):
    """Active while make_fx traces the step: a Python-side read of the value of a tensor that
    depends on the inputs raises :class:`Fallback` naming the read and the user's line; a read
    of a tensor that does not (built from constants) runs untraced and its value is kept."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = getattr(func, "__name__", None)
        if name in _READS and args and isinstance(args[0], torch.Tensor):
            if _depends_on_inputs(args[0]):
                raise Fallback(
                    f"the model or guide reads a tensor's value in Python ({name})"
                    f"{user_line(traceback.extract_stack()[:-1])}: a compiled graph would "
                    "keep the value its capture saw"
                )
            from torch.fx.experimental.proxy_tensor import disable_proxy_modes_tracing

            with disable_proxy_modes_tracing():
                return func(*args, **kwargs)
        return func(*args, **kwargs)
