"""What a static graph cannot follow, checked while the step of
:mod:`bayesdl.inference.compiled` is captured: a change of the model's structure between traces
(:func:`structure`) and a Python-side read of a tensor's value (:class:`ValueReads`).
"""

from __future__ import annotations

import os
import sys
import traceback
from collections.abc import Callable
from typing import Any

import pyro
import pyro.util
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


_PYRO = os.path.dirname(pyro.__file__) + os.sep
_TORCH_OR_HERE = (os.path.dirname(torch.__file__) + os.sep, __file__)
#: Pyro's own reads of a tensor's value that a trace may answer without reading it, by the
#: function that reads (``(file under pyro/, function)``), and the answer
_PYRO_READS = {
    # ``if not (p > 0).all():`` in the enumerated ELBO's ``sum_k p_k c_k`` (see ValueReads)
    ("infer/util.py", "compute_expectation"): False,
    # warnings only; a NaN or inf loss is found by the training loop at its log points
    ("util.py", "warn_if_nan"): False,
    ("util.py", "warn_if_inf"): False,
}


def _pyro_reader() -> tuple[str, str] | None:
    """``(file under pyro/, function)`` of the innermost frame outside torch and this module,
    when it is one of Pyro's, else ``None``."""
    frame = sys._getframe(1)
    while frame is not None and frame.f_code.co_filename.startswith(_TORCH_OR_HERE):
        frame = frame.f_back
    if frame is None or not frame.f_code.co_filename.startswith(_PYRO):
        return None
    return frame.f_code.co_filename[len(_PYRO) :], frame.f_code.co_name


def _no_warning(value, *args, **kwargs):
    return value


class ValueReads(TorchFunctionMode):
    """Active while make_fx traces the step: a Python-side read of the value of a tensor that
    depends on the inputs raises :class:`Fallback` naming the read and the user's line; a read
    of a tensor that does not (built from constants) runs untraced and its value is kept.

    Some reads of Pyro's own are answered without a value (:data:`_PYRO_READS`): its NaN and
    inf warnings, and ``Dice.compute_expectation`` (the enumerated ELBO's ``sum_k p_k c_k``),
    which drops the terms with ``p_k = 0`` (``c_k`` may be ``-inf`` there) only ``if not
    (p > 0).all()``, by ``masked_select``, whose output shape depends on the values. In the
    trace that branch is always taken and ``masked_select(x, m)`` becomes ``where(m, x, 0)``:
    the dot product ``sum_k p_k c_k`` over ``m`` is the same sum, in a graph of static shapes,
    whatever the probabilities at each step."""

    def __enter__(self):
        # Pyro's NaN/inf warnings also hook the gradient (`warn_if_nan` registers itself as a
        # backward hook, which runs inside autograd, where this mode is not consulted): the
        # hook calls pyro.util's own name, which is a no-op while the step is traced
        self._warnings = pyro.util.warn_if_nan, pyro.util.warn_if_inf
        pyro.util.warn_if_nan = pyro.util.warn_if_inf = _no_warning
        return super().__enter__()

    def __exit__(self, *exc):
        pyro.util.warn_if_nan, pyro.util.warn_if_inf = self._warnings
        return super().__exit__(*exc)

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = getattr(func, "__name__", None)
        if name in ("__bool__", "masked_select"):
            reader = _pyro_reader()
            if name == "__bool__" and reader in _PYRO_READS:
                return _PYRO_READS[reader]
            if name == "masked_select" and reader == ("infer/util.py", "compute_expectation"):
                x, mask = args
                zero = torch.zeros((), dtype=x.dtype, device=x.device)
                return torch.where(mask, x, zero).reshape(-1)
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
