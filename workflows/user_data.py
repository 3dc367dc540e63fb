"""A user's model's keyword arguments: from a data file (``.npz`` arrays, ``.csv`` columns),
from Python (``data={...}``) and from ``--arg name=value``, checked against its signature.
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bayesdl.datasets.io import check_fits, load_arrays
from bayesdl.inference.errors import UserError
from bayesdl.workflows.inputs import numeric_array, real_tensor


def python_data(data: dict[str, Any]) -> dict[str, Any]:
    """Keyword arguments given from Python: numpy arrays become tensors (floating ->
    the default float dtype, integers -> int64; object arrays of numbers converted, complex
    and non-numeric ones refused: :mod:`bayesdl.workflows.inputs`), complex tensors are
    refused, other tensors and values pass unchanged."""
    out = {}
    for k, v in data.items():
        if not isinstance(k, str) or not k.isidentifier():
            raise UserError(f"data keys must be argument names, got {k!r}")
        if isinstance(v, np.ndarray):
            v = _tensor(numeric_array(f"data[{k!r}]", v), f"data[{k!r}]")
        elif torch.is_tensor(v):
            v = real_tensor(f"data[{k!r}]", v)
        out[k] = v
    return out


def _tensor(a: np.ndarray, what: str = "an array") -> torch.Tensor:
    """``bool`` stays, integers become ``int64``, the rest the default float dtype; shared with
    the array (no copy) when it already has that dtype, like ``torch.from_numpy``. A value
    beyond that float dtype's range is refused (:func:`~bayesdl.datasets.io.check_fits`)."""
    kind = a.dtype.kind
    if kind == "b":
        target = np.dtype(np.bool_)
    elif kind in "iu":
        target = np.dtype(np.int64)
    else:
        default = torch.get_default_dtype()
        if default not in _NUMPY_FLOATS:
            return torch.as_tensor(a, dtype=default)
        target = _NUMPY_FLOATS[default]
        check_fits(what, a, target)
    if a.dtype != target:  # also a non-native byte order
        a = a.astype(target)
    elif not a.flags.writeable:
        a = a.copy()
    elif any(s < 0 for s in a.strides):
        a = np.ascontiguousarray(a)
    return torch.from_numpy(a)


_NUMPY_FLOATS = {
    torch.float16: np.dtype(np.float16),
    torch.float32: np.dtype(np.float32),
    torch.float64: np.dtype(np.float64),
}


def read_data(
    path: str | Path,
    x_cols: str | None = None,
    y_col: str | None = None,
    require_y: bool = True,
) -> dict[str, torch.Tensor]:
    """Keyword arguments from a data file: every array of a ``.npz``; every named column of a
    ``.csv``, or ``x`` (columns ``x_cols``, shape N x d) and ``y`` (column ``y_col``).

    Floating arrays become the default float dtype, integers ``int64`` (usable as indices),
    ``true``/``false`` columns ``bool``; ``x`` from ``--x-cols`` is a floating N x d matrix.
    A ``.npz`` whose ``x`` and ``y`` (or ``x_test`` and ``y_test``) differ in length is refused."""
    from bayesdl.datasets.io import TABLE_DELIMITERS, load_columns

    suffix = Path(path).suffix.lower()
    if suffix == ".npz":
        arrays = load_arrays(path)
        if x_cols or y_col:
            raise UserError(
                "--x-cols and --y-col pick columns of a .csv; a .npz gives its arrays by name"
            )
        for xk, yk in (("x", "y"), ("x_test", "y_test")):
            x, y = arrays.get(xk), arrays.get(yk)
            if x is not None and y is not None and x.ndim and y.ndim and len(x) != len(y):
                raise UserError(
                    f"data file {path}: {xk} has shape {x.shape} and {yk} {y.shape}; "
                    f"they need the same number of rows"
                )
        return {k: _tensor(v, f"data file {path}: array {k!r}") for k, v in arrays.items()}
    default = _NUMPY_FLOATS.get(torch.get_default_dtype(), np.dtype(np.float64))
    if suffix in TABLE_DELIMITERS:
        names, cols = load_columns(path, default)
    else:  # .npy (or an unknown suffix, which load_arrays refuses)
        table = load_arrays(path)["table"]
        if table.ndim != 2:
            raise UserError(
                f"data file {path}: a table must be 2-D (N x d) to pick columns, "
                f"got shape {table.shape}"
            )
        names, cols = None, [table[:, j] for j in range(table.shape[1])]
    columns = dict(zip(names, cols, strict=True)) if names else {}  # by header name

    def column(c: str) -> np.ndarray:
        if c in columns:
            return columns[c]
        if c.lstrip("-").isdigit() and -len(cols) <= int(c) < len(cols):
            return cols[int(c)]
        known = ", ".join(columns) if columns else f"{len(cols)} unnamed columns (0-based)"
        raise UserError(f"data file {path} has no column {c!r}; it has {known}")

    if not x_cols and not y_col:
        if not columns:
            raise UserError(
                f"data file {path} has no header: name its columns in a first row, "
                "or pick them with --x-cols/--y-col (0-based indices)"
            )
        return {k: _tensor(v, f"data file {path}: column {k!r}") for k, v in columns.items()}
    out: dict[str, torch.Tensor] = {}
    names = list(columns) or [str(j) for j in range(len(cols))]
    if y_col:
        try:
            y = np.ascontiguousarray(column(y_col))
            out["y"] = _tensor(y, f"data file {path}: column {y_col!r}")
        except UserError:
            if require_y:
                raise
    if x_cols:
        xs = [c.strip() for c in x_cols.split(",") if c.strip()]
    else:
        xs = [c for c in names if c != y_col and c != str(y_col)]
    if not xs:
        raise UserError(f"data file {path}: no columns left for x")
    picked = [column(c) for c in xs]
    x = np.empty((len(picked[0]), len(picked)), dtype=default)
    for j, c in enumerate(picked):
        check_fits(f"data file {path}: column {xs[j]!r}", c, default)
        x[:, j] = c
    out["x"] = _tensor(x)
    return out


def parse_kv(items: Iterable[str] | None, flag: str = "--arg") -> dict[str, Any]:
    """``--arg name=value`` pairs; values read as JSON (numbers, true/false, lists), else text
    (``flag``: the option named in the error)."""
    out: dict[str, Any] = {}
    for item in items or []:
        name, sep, value = item.partition("=")
        name = name.strip()
        if not sep or not name.isidentifier():
            raise UserError(f"{flag} takes name=value, got {item!r}")
        try:
            out[name] = json.loads(value)
        except ValueError:
            out[name] = value
    return out


def check_arguments(fn: Callable, kwargs: dict[str, Any], where: str, source: str) -> None:
    """Refuse keyword arguments that ``fn`` does not take, and required ones that are absent."""
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return
    takes_any = any(p.kind is p.VAR_KEYWORD for p in params.values())
    named = [n for n, p in params.items() if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    if not takes_any:
        for k in kwargs:
            if k not in named:
                raise UserError(
                    f"data key {k!r} ({source}) is not an argument of {where}; "
                    f"it takes: {', '.join(named) or 'no arguments'}"
                )
    for n in named:
        if params[n].default is params[n].empty and n not in kwargs:
            raise UserError(
                f"{where} needs the argument {n!r}, which {source} does not give "
                f"(it gives: {', '.join(kwargs) or 'nothing'})"
            )
