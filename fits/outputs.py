"""Files bayesdl writes where the user points it: ``predict --output``, ``compare --json`` and
``compare --out``, ``sample --out``, ``tour --out``, and ``evaluation.json`` in a run folder.

Never through a link (:mod:`bayesdl.inference.files`), never replacing an existing file
without ``--overwrite``, and never into a run folder while a fit holds its lock: writing
takes the lock shared (``flock(LOCK_SH)``), so a fit holding it (``LOCK_EX``) makes the write
a one-line refusal, and a fit starting meanwhile is refused as "busy" until the write ends.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import stat
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

import numpy as np

from bayesdl.fits.records import LOCK
from bayesdl.inference import files
from bayesdl.inference.errors import UserError


@contextlib.contextmanager
def not_busy(folder: str | Path) -> Iterator[None]:
    """Hold ``folder``'s run lock shared while writing into it, if it is a run folder; a run
    folder another process is fitting into is a :class:`UserError`."""
    lock = Path(folder) / LOCK
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
    try:
        fd = os.open(lock, flags)
    except (FileNotFoundError, NotADirectoryError):  # not a run folder (the write says why)
        yield
        return
    except OSError as e:
        raise UserError(f"cannot use the lock {lock}: {files._why(e)}") from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise UserError(f"the lock {lock} is not a regular file")
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError as e:
            if e.errno in (errno.EAGAIN, errno.EACCES):
                raise UserError(
                    f"{folder} is a run folder another bayesdl process is writing (a fit "
                    "holds its lock): wait for it to finish, or write elsewhere"
                ) from None
            raise UserError(f"cannot lock {lock}: {files._why(e)}") from None
        yield
    finally:
        os.close(fd)


def check_file(path: str | Path, overwrite: bool, flag: str) -> None:
    """Refuse (before any work) an output ``path`` that is a link or not a regular file, or
    that exists without ``overwrite``."""
    st = files.entry(path, flag)
    if st is None:
        return
    if stat.S_ISLNK(st.st_mode):
        raise UserError(
            f"{flag} {path} is a symbolic link: bayesdl writes no file through a link (remove "
            "it, or choose another file)"
        )
    if not stat.S_ISREG(st.st_mode):
        raise UserError(f"{flag} {path} is {files.kind(st)}, not a file bayesdl can write")
    if not overwrite:
        raise UserError(
            f"{flag} {path} already exists: add --overwrite to replace it, or choose another file"
        )


def write(
    path: str | Path,
    content: str | Callable[[BinaryIO], None],
    *,
    overwrite: bool,
    flag: str,
) -> None:
    """Write an output file (text, or by a writer of a binary file) by the rules above."""
    path = Path(path)
    check_file(path, overwrite, flag)
    writer = content if callable(content) else (lambda f: f.write(content.encode("utf-8")))
    with not_busy(path.parent):
        try:
            files.write_with(path, writer, replace=overwrite)
        except files.Exists:
            raise UserError(
                f"{flag} {path} already exists: add --overwrite to replace it, or choose "
                "another file"
            ) from None


def check_folder(out: str | Path, overwrite: bool, flag: str = "--out") -> None:
    """An output folder (``sample --out``) that is missing, empty, or ``overwrite``."""
    st = files.entry(out, flag)
    if st is None:
        return
    if not os.path.isdir(out):
        raise UserError(f"{flag} {out} is {files.kind(st)}, not a folder")
    if not overwrite and any(os.scandir(out)):
        raise UserError(
            f"{flag} {out} already holds files: add --overwrite to write into it (replacing "
            "files of the same names), or choose a new folder"
        )


def check_no_links(out: str | Path, depth: int = 2, flag: str = "--out") -> None:
    """Refuse a folder bayesdl fills with runs (the tour's) that holds a symbolic link within
    ``depth`` levels: writing there could follow it outside the folder."""
    if depth < 1 or not os.path.isdir(out):
        return
    try:
        entries = list(os.scandir(out))
    except OSError as e:
        raise UserError(f"cannot read {flag} {out}: {files._why(e)}") from None
    for e in entries:
        if e.is_symlink():
            raise UserError(
                f"{flag}: {e.path} is a symbolic link; bayesdl writes only into plain folders "
                "and files there (remove it, or choose another --out)"
            )
        if e.is_dir(follow_symlinks=False):
            check_no_links(e.path, depth - 1, flag)


def flat_arrays(result: dict, prefix: str = "") -> dict[str, np.ndarray]:
    """A nested result (``{"y": {"mean": [...], "std": [...]}}``) as ``{"y.mean": array, ...}``:
    what ``predict --output FILE.npz`` writes (numbers as float64 / int64 arrays, text as
    strings; ``np.load`` reads it without pickle)."""
    out: dict[str, np.ndarray] = {}
    for key, value in result.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flat_arrays(value, f"{name}."))
            continue
        a = np.asarray(value if value is not None else np.nan)
        if a.dtype == object:
            a = np.asarray(str(value))
        out[name] = a
    return out


def npz_writer(result: dict) -> Callable[[BinaryIO], None]:
    """A writer of ``result`` as a ``.npz`` file (:func:`flat_arrays`), for :func:`write`."""
    arrays = flat_arrays(result)
    return lambda f: np.savez(f, **arrays)
