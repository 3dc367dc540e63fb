"""Reading user data files and checking them: every problem is a one-line :class:`UserError`.

Text tables (``.csv``, ``.tsv``, ``.txt``) go through pandas' C reader, a block of rows at a
time, each column straight into ``int64``, ``bool`` or the floating dtype asked for, so a file
of millions of rows reads in about a second with little more memory than its arrays. Nothing is
guessed silently: duplicate column names, rows of the wrong length, text, complex numbers,
integers beyond ``int64`` and NaN or infinite values are refused.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

from bayesdl.inference import files
from bayesdl.inference.errors import UserError

TABLE_DELIMITERS = {".csv": ",", ".txt": ",", ".tsv": "\t"}
CHUNK_ROWS = 1 << 18  # rows parsed at a time: bounds the float64 scratch to ~2 MB a column
_INT64 = np.iinfo(np.int64)


def check_finite(name: str, array: np.ndarray | torch.Tensor) -> None:
    """Refuse NaN or infinite values, saying where the first one is."""
    a = array.detach().cpu().numpy() if torch.is_tensor(array) else np.asarray(array)
    if a.dtype.kind in "fc" and not np.isfinite(a).all():
        bad = np.argwhere(~np.isfinite(a))[0]
        where = ", ".join(str(int(i)) for i in bad)
        raise UserError(f"{name} holds a NaN or infinite value (first at index [{where}])")


def check_fits(what: str, a: np.ndarray, dtype: np.dtype | type, offset: int = 0) -> None:
    """Refuse finite values of ``a`` beyond the range of the narrower floating ``dtype`` they
    are about to be converted to (they would become infinite), saying which and how to fix
    it; ``offset`` is the index of ``a[0]`` in the whole column."""
    dtype = np.dtype(dtype)
    if a.dtype.kind != "f" or dtype.kind != "f" or dtype.itemsize >= a.dtype.itemsize:
        return
    limit = float(np.finfo(dtype).max)
    if not a.size or not np.abs(a).max() > limit:  # one pass; NaN and inf: check_finite's
        return
    big = np.isfinite(a) & (np.abs(a) > limit)
    if not big.any():
        return
    index = np.argwhere(big)[0]
    where = ", ".join(str(int(i) + (offset if j == 0 else 0)) for j, i in enumerate(index))
    raise UserError(
        f"{what} holds {a[tuple(index)]:g} (index [{where}]), beyond the range of {dtype} "
        f"(+-{limit:.4g}) in which it is computed: rescale the data, or compute in float64 "
        "where supported (from Python: torch.set_default_dtype(torch.float64) before fitting)"
    )


def load_arrays(path: str | Path) -> dict[str, np.ndarray]:
    """Arrays of a ``.npz`` (by name), or one table of a ``.csv``/``.txt``/``.npy``
    (a ``.csv`` with a header gives one array per column plus ``table``).

    Table columns keep their kind: integers ``int64``, ``true``/``false`` ``bool``, the rest
    ``float64``; ``table`` is all of them in one N x d array of their common dtype."""
    path = _existing(path)
    suffix = path.suffix.lower()
    if suffix not in (".npz", ".npy", *TABLE_DELIMITERS):
        raise UserError(f"data file {path}: unknown format {suffix!r} (use .npz, .npy or .csv)")
    with _read_errors(path):
        if suffix == ".npz":  # headers checked against sizes first, nothing unpickled
            arrays = files.load_npz(path, "data file", follow=True)
        elif suffix == ".npy":
            arrays = {"table": files.load_npy(path, "data file", follow=True)}
        else:
            names, columns = _read_table(path, TABLE_DELIMITERS[suffix], np.float64)
            table, columns = _as_table(columns)
            arrays = {"table": table, **(dict(zip(names, columns, strict=True)) if names else {})}
            return arrays  # columns were checked as they were read
    if not arrays:
        raise UserError(f"data file {path} holds no arrays")
    for name, a in arrays.items():
        _check_array(f"data file {path}: array {name!r}", a)
        check_finite(f"data file {path}, array {name!r},", a)
    return arrays


def load_columns(
    path: str | Path, float_dtype: np.dtype | type = np.float32
) -> tuple[list[str] | None, list[np.ndarray]]:
    """The columns of a text table (``.csv``/``.tsv``/``.txt``) and their header names (None
    without a header): integers ``int64``, ``true``/``false`` ``bool``, the rest
    ``float_dtype``, each one contiguous array, checked as :func:`load_arrays` checks."""
    path = _existing(path)
    suffix = path.suffix.lower()
    if suffix not in TABLE_DELIMITERS:
        raise UserError(f"data file {path}: not a text table (use .csv, .tsv or .txt)")
    with _read_errors(path):
        return _read_table(path, TABLE_DELIMITERS[suffix], np.dtype(float_dtype))


# -- pieces


def _existing(path: str | Path) -> Path:
    """A regular file (through links): not missing, a folder, a pipe, a device or a loop."""
    path = Path(path)
    if files.entry(path, "data file") is None:
        raise UserError(f"data file {path} does not exist")
    if path.is_dir():
        raise UserError(f"data file {path} is a directory")
    files.check_regular(path, "data file")
    return path


class _read_errors:
    """Any failure of a reader other than a :class:`UserError` is a malformed file."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind, e, tb) -> bool:
        if e is None or isinstance(e, UserError) or not isinstance(e, Exception):
            return False
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UserError(f"cannot read data file {self.path}: {msg}") from None


def _check_array(what: str, a: np.ndarray) -> None:
    """Numbers only, complex refused, integers within ``int64`` (where they are used)."""
    kind = a.dtype.kind
    if kind == "c":
        raise UserError(
            f"{what} is complex ({a.dtype}); store the real and imaginary parts as two arrays"
        )
    if kind not in "biuf":
        raise UserError(f"{what} is not numeric ({a.dtype})")
    if kind == "u" and a.dtype.itemsize >= 8 and a.size and a.max() > _INT64.max:
        raise UserError(f"{what} holds {a.max()}, beyond the int64 range of integer data")


def _first_line(path: Path) -> tuple[int, str | None]:
    """The 0-based number and the text of the first non-blank line."""
    with open(path, encoding="utf-8-sig") as f:
        for i, line in enumerate(f):
            if line.strip():
                return i, line.rstrip("\r\n")
    return 0, None


def _read_table(
    path: Path, delimiter: str, float_dtype: np.dtype
) -> tuple[list[str] | None, list[np.ndarray]]:
    start, first = _first_line(path)
    if first is None:
        raise UserError(f"data file {path} is empty")
    cells = _header_cells(first, delimiter)
    names = cells if any(c and not _is_number(c) for c in cells) else None
    if names is not None:
        seen: set[str] = set()
        for j, name in enumerate(names):
            if not name:
                raise UserError(
                    f"data file {path}: column {j} has no name in the header (R's write.csv "
                    "puts its row names there: write it with row.names = FALSE)"
                )
            if name in seen:
                raise UserError(
                    f"data file {path}: column {name!r} appears twice in the header; "
                    "rename one (columns are passed by name)"
                )
            seen.add(name)
    width = len(cells)  # every row must have as many fields as the first line

    import pandas as pd  # the C reader: imported here, only when a table is read

    parts: list[list[np.ndarray]] = []
    labels = names or [str(j) for j in range(width)]
    rows = 0  # rows read before this chunk
    try:
        reader = pd.read_csv(
            path,
            sep=delimiter,
            header=None,
            skiprows=start + 1 if names is not None else start,
            index_col=False,
            engine="c",
            chunksize=CHUNK_ROWS,
            encoding="utf-8-sig",
        )
        with reader:
            for chunk in reader:
                if chunk.shape[1] != width:
                    _raise_ragged(path, delimiter, start, names, width)
                    raise UserError(
                        f"data file {path}: rows have {chunk.shape[1]} fields, "
                        f"the first line {width}"
                    )
                if not parts:
                    parts = [[] for _ in range(width)]
                for j in range(width):
                    what = f"data file {path}: column {labels[j]!r}"
                    parts[j].append(_chunk_column(chunk.iloc[:, j], float_dtype, what, rows))
                rows += len(chunk)
                del chunk
    except pd.errors.EmptyDataError:
        parts = []
    except pd.errors.ParserError:
        _raise_ragged(path, delimiter, start, names, width)
        raise
    if not parts:
        if names is not None:
            raise UserError(f"data file {path} has a header but no rows")
        raise UserError(f"data file {path} is empty")
    columns = []
    for j, name in enumerate(labels):
        what = f"data file {path}: column {name!r}"
        col = _join(what, parts[j], float_dtype)
        parts[j] = []  # free the pieces before the next column is joined
        if col.dtype.kind == "f" and not np.isfinite(col).all():
            _raise_ragged(path, delimiter, start, names, width)
        check_finite(f"data file {path}, column {name!r},", col)
        columns.append(col)
    return names, columns


def _chunk_column(s, float_dtype: np.dtype, what: str, offset: int) -> np.ndarray:
    """One column of one block of rows as numpy: floats narrowed here, block by block (a
    value beyond the narrower dtype's range refused, see :func:`check_fits`)."""
    a = s.to_numpy()
    if a.dtype.kind == "f" and a.dtype != float_dtype:
        check_fits(what, a, float_dtype, offset)
        return a.astype(float_dtype)
    if a.dtype.kind == "u" and (not a.size or a.max() <= _INT64.max):
        return a.astype(np.int64)
    if a.dtype.kind not in "biuf":
        return np.asarray(a, dtype=object)
    return a


def _join(what: str, parts: list[np.ndarray], float_dtype: np.dtype) -> np.ndarray:
    """The blocks of one column as one contiguous array of one dtype, or a clear error."""
    offset = 0
    for p in parts:
        if p.dtype.kind == "O":
            _raise_not_numeric(what, p, offset)
        _check_array(what, p)
        offset += len(p)
    kinds = {p.dtype.kind for p in parts}
    if "b" in kinds and kinds != {"b"}:
        raise UserError(f"{what} mixes true/false with numbers")
    dtype = float_dtype if "f" in kinds else np.dtype(np.int64) if "i" in kinds else np.bool_
    if len(parts) == 1 and parts[0].dtype == dtype and parts[0].flags.c_contiguous:
        return parts[0]
    out = np.empty(offset, dtype=dtype)
    offset = 0
    for p in parts:
        out[offset : offset + len(p)] = p
        offset += len(p)
    return out


def _raise_not_numeric(what: str, values: np.ndarray, offset: int) -> None:
    for i, v in enumerate(values):
        if isinstance(v, str):
            try:
                float(v)
            except ValueError:
                raise UserError(f"{what} is not numeric ({v!r} at index [{offset + i}])") from None
        elif isinstance(v, int) and not isinstance(v, bool) and not _INT64.min <= v <= _INT64.max:
            raise UserError(
                f"{what} holds {v} (index [{offset + i}]), beyond the int64 range of integer data"
            )
    raise UserError(f"{what} is not numeric (it mixes kinds of values)")


def _raise_ragged(
    path: Path, delimiter: str, start: int, names: list[str] | None, width: int
) -> None:
    """Raise if some row has a different number of fields than the first line (only called
    once reading failed or found holes: it walks the file in Python)."""
    for number, fields in _field_counts(path, delimiter, start):
        if fields != width:
            against = (
                f"the header names {width} columns"
                if names is not None
                else f"line {start + 1} has {width}"
            )
            s = "" if fields == 1 else "s"
            raise UserError(f"data file {path}: line {number} has {fields} field{s}, {against}")


def _field_counts(path: Path, delimiter: str, start: int) -> Iterator[tuple[int, int]]:
    with open(path, encoding="utf-8-sig") as f:
        for i, line in enumerate(f):
            if i > start and line.strip():
                yield i + 1, line.count(delimiter) + 1


def _as_table(columns: list[np.ndarray]) -> tuple[np.ndarray, list[np.ndarray]]:
    """Columns as one N x d ``table``; columns of its dtype become views of it (no copy kept)."""
    kinds = {c.dtype.kind for c in columns}
    if "f" in kinds:
        dtype = np.result_type(*[c.dtype for c in columns if c.dtype.kind == "f"])
    else:
        dtype = np.dtype(np.int64) if "i" in kinds else np.dtype(np.bool_)
    table = np.empty((len(columns[0]), len(columns)), dtype=dtype)
    for j, c in enumerate(columns):
        table[:, j] = c
    return table, [table[:, j] if c.dtype == dtype else c for j, c in enumerate(columns)]


def _header_cells(line: str, delimiter: str) -> list[str]:
    """The cells of a first line, read as pandas' reader reads fields: ``"x","y"`` (quoted, as
    R's ``write.csv`` writes a header) is ``x``, ``y``; spaces around a cell are dropped."""
    import csv

    return [c.strip() for c in next(csv.reader([line], delimiter=delimiter))]


def _is_number(s: str) -> bool:
    try:
        float(s)
        return True
    except ValueError:
        return False
