"""What a user passes from Python, checked before a model sees it: the ``data=`` of a fit and
the inputs of ``predict``. Every problem is one :class:`UserError` naming the key.

Refused, where a model would fail deep inside Pyro or, worse, quietly compute something else:
complex values (numpy drops the imaginary part with a warning), arrays of Python objects that
are not numbers, floating values beyond the float dtype they are narrowed to (they become
infinite), and for ``predict`` a key the model does not take, NaN or infinite inputs, and an
input whose trailing shape or number of dimensions is not the training one (``x`` of shape
``[N, 1]`` for a model fitted on ``[N]`` broadcasts to ``[N, N]`` without an error).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch

from bayesdl.datasets.io import check_finite
from bayesdl.inference.errors import UserError
from bayesdl.inference.failures import message, user_frame


def numeric_array(what: str, a: np.ndarray) -> np.ndarray:
    """``a`` as an array of numbers: an object array of numbers becomes one (numpy's own
    inference), strings, other objects and complex values are refused."""
    if a.dtype.kind == "O":
        converted = np.asarray(a.tolist())
        if converted.dtype.kind not in "biuf":
            bad = next((v for v in a.ravel() if not isinstance(v, int | float | np.number)), None)
            raise UserError(
                f"{what} is a numpy array of Python objects (dtype object) holding {bad!r}: "
                "give numbers, e.g. np.asarray(values, dtype=float)"
            )
        a = converted
    if a.dtype.kind == "c":
        raise UserError(
            f"{what} is complex ({a.dtype}): bayesdl fits real values; pass the real and "
            "imaginary parts as two arrays"
        )
    if a.dtype.kind not in "biuf":
        raise UserError(f"{what} is not numeric (numpy dtype {a.dtype})")
    return a


def real_tensor(what: str, t: torch.Tensor) -> torch.Tensor:
    """``t`` unless it is complex (refused: Pyro's distributions are real-valued)."""
    if t.is_complex():
        raise UserError(
            f"{what} is a complex tensor ({t.dtype}): bayesdl fits real values; pass the real "
            "and imaginary parts as two tensors"
        )
    return t


def check_arguments_of(fn: Callable, keys: Mapping[str, Any], where: str) -> None:
    """Refuse a key that is not a keyword argument of ``fn`` (unless it takes ``**kwargs``)."""
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return
    if any(p.kind is p.VAR_KEYWORD for p in params.values()):
        return
    named = [n for n, p in params.items() if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    for k in keys:
        if k not in named:
            name = getattr(fn, "__name__", type(fn).__name__)
            raise UserError(
                f"{where}: {k!r} is not an argument of {name}(); it takes: "
                f"{', '.join(named) or 'no arguments'}"
            )


def check_like_training(new: Mapping[str, Any], train: Mapping[str, Any], where: str) -> None:
    """Refuse NaN or infinite inputs, and an input whose number of dimensions or trailing
    shape is not that of the training value of the same name (the leading size N may
    change)."""
    for k, v in new.items():
        if not (torch.is_tensor(v) or isinstance(v, np.ndarray)):
            continue
        if v.dtype.kind in "fc" if isinstance(v, np.ndarray) else v.is_floating_point():
            check_finite(f"{where}: {k}", v)
        old = train.get(k)
        if not torch.is_tensor(old) or old.dim() == 0:
            continue
        shape, fitted = tuple(v.shape), tuple(old.shape)
        if len(shape) != len(fitted) or shape[1:] != fitted[1:]:
            want = "[N" + "".join(f", {n}" for n in fitted[1:]) + "]"
            raise UserError(
                f"{where}: {k} has shape {shape}, but the model was fitted with {k} of shape "
                f"{want} (N rows, any N): give that shape"
            )


def predict_inputs(model: Callable, train: Mapping[str, Any], new: Any) -> dict[str, Any]:
    """The new inputs of ``Posterior.predict``, checked (a dict of the model's keyword
    arguments; arrays and tensors as :func:`numeric_array` / :func:`real_tensor`, then
    :func:`check_like_training`)."""
    where = "predict"
    if new is None:
        return {}
    if not isinstance(new, dict):
        raise UserError(f"data must be a dict of keyword arguments, got {type(new).__name__}")
    out = {}
    for k, v in new.items():
        if not isinstance(k, str) or not k.isidentifier():
            raise UserError(f"{where}: data keys must be argument names, got {k!r}")
        if isinstance(v, np.ndarray):
            v = numeric_array(f"{where}: data[{k!r}]", v)
        elif torch.is_tensor(v):
            v = real_tensor(f"{where}: data[{k!r}]", v)
        out[k] = v
    check_arguments_of(model, out, where)
    check_like_training(out, train, where)
    return out


@contextmanager
def model_errors(where: str) -> Iterator[None]:
    """An exception of the model (or of Pyro on its behalf) inside is one :class:`UserError`:
    ``where: Type: message (file, line N, in fn)``."""
    try:
        yield
    except UserError:
        raise
    except Exception as e:  # noqa: BLE001 - the user's model may raise anything
        frame = user_frame(e)
        raise UserError(f"{where}: {message(e)}" + (f" ({frame})" if frame else "")) from e
