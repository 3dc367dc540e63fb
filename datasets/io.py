"""Reading user data files and checking them: every problem is a one-line :class:`UserError`."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from bayesdl.inference.errors import UserError


def check_finite(name: str, array: np.ndarray | torch.Tensor) -> None:
    """Refuse NaN or infinite values, saying where the first one is."""
    a = array.detach().cpu().numpy() if torch.is_tensor(array) else np.asarray(array)
    if a.dtype.kind in "fc" and not np.isfinite(a).all():
        bad = np.argwhere(~np.isfinite(a))[0]
        where = ", ".join(str(int(i)) for i in bad)
        raise UserError(f"{name} holds a NaN or infinite value (first at index [{where}])")


def load_arrays(path: str | Path) -> dict[str, np.ndarray]:
    """Arrays of a ``.npz`` (by name), or one table of a ``.csv``/``.txt``/``.npy``
    (a ``.csv`` with a header gives one array per column plus ``table``)."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"data file {path} does not exist")
    if path.is_dir():
        raise UserError(f"data file {path} is a directory")
    suffix = path.suffix.lower()
    try:
        if suffix == ".npz":
            with np.load(path, allow_pickle=False) as f:
                arrays = {k: f[k] for k in f.files}
        elif suffix == ".npy":
            arrays = {"table": np.load(path, allow_pickle=False)}
        elif suffix in (".csv", ".txt", ".tsv"):
            arrays = _load_table(path, "\t" if suffix == ".tsv" else ",")
        else:
            raise UserError(f"data file {path}: unknown format {suffix!r} (use .npz, .npy or .csv)")
    except UserError:
        raise
    except Exception as e:  # noqa: BLE001 - any parse failure is a malformed file
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise UserError(f"cannot read data file {path}: {msg}") from None
    if not arrays:
        raise UserError(f"data file {path} holds no arrays")
    for name, a in arrays.items():
        if a.dtype.kind not in "biufc":
            raise UserError(f"data file {path}: array {name!r} is not numeric ({a.dtype})")
        check_finite(f"data file {path}, array {name!r},", a)
    return arrays


def _load_table(path: Path, delimiter: str) -> dict[str, np.ndarray]:
    text = path.read_text().strip().splitlines()
    if not text:
        raise UserError(f"data file {path} is empty")
    first = [c.strip() for c in text[0].replace(";", delimiter).split(delimiter)]
    has_header = any(not _is_number(c) for c in first if c)
    rows = text[1:] if has_header else text
    if not rows:
        raise UserError(f"data file {path} has a header but no rows")
    try:
        table = np.array(
            [[float(c) if c.strip() else np.nan for c in r.split(delimiter)] for r in rows],
            dtype=np.float64,
        )
    except ValueError as e:
        raise UserError(f"data file {path}: not a numeric table ({e})") from None
    if table.ndim != 2:
        raise UserError(f"data file {path}: rows have different numbers of columns")
    arrays = {"table": table}
    if has_header:
        if len(first) != table.shape[1]:
            raise UserError(
                f"data file {path}: header has {len(first)} names, rows {table.shape[1]}"
            )
        arrays.update({name: table[:, j] for j, name in enumerate(first)})
    return arrays


def _is_number(s: str) -> bool:
    try:
        float(s)
        return True
    except ValueError:
        return False
