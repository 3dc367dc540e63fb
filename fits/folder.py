"""A run folder while it is written: its JSON files written atomically, its lock, the checks
before a fit writes into it (nothing replaced without ``--overwrite``), and the checks that a
``--resume`` continues the same run (same options, data and code).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import math
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from bayesdl.fits import records
from bayesdl.fits.records import CONFIG, LOCK, RUN_FILES
from bayesdl.inference import files
from bayesdl.inference.errors import UserError
from bayesdl.inference.train import CHECKPOINT

#: options that may change when a run is resumed (they do not change the fit's result)
RESUMABLE = {
    "steps",
    "log_every",
    "checkpoint_every",
    "device",
    "threads",
    "check_args",
    "compile",
}

# ----------------------------------------------------------------------------- JSON files


def jsonable(v: Any) -> Any:
    """``v`` as bayesdl's JSON files hold it: paths as strings, tensors as lists, NaN as null,
    infinities as the strings ``"inf"`` / ``"-inf"``."""
    if isinstance(v, Path):
        return str(v)
    if isinstance(v, float) and not math.isfinite(v):
        return None if math.isnan(v) else ("inf" if v > 0 else "-inf")
    if isinstance(v, dict):
        return {k: jsonable(x) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [jsonable(x) for x in v]
    if torch.is_tensor(v):
        return jsonable(v.detach().cpu().tolist())
    return v


def json_text(obj: Any) -> str:
    """``obj`` as bayesdl's JSON files hold it (tensors as lists, infinities as strings)."""
    return json.dumps(jsonable(obj), indent=2) + "\n"


def write_json(path: Path, obj: Any) -> None:
    """Write JSON atomically (see :func:`write_text`)."""
    write_text(path, json_text(obj))


def write_text(path: Path, text: str) -> None:
    """Write a file of a run folder atomically (:func:`bayesdl.inference.files.write_text`: a
    fresh temporary file, then a rename): never through a symbolic link, never into a pipe or a
    device (a UserError). A failure is a :class:`UserError` naming the file."""
    files.write_text(path, text)


def os_error(e: OSError, what: str) -> UserError:
    """A :class:`UserError` for an ``OSError`` while writing ``what``, naming its file."""
    where = f" ({e.filename})" if getattr(e, "filename", None) else ""
    return UserError(f"cannot write {what}{where}: {e.strerror or e}")


def writable(folder: Path) -> bool:
    """Whether this process may create files in ``folder``."""
    return os.access(folder, os.W_OK | os.X_OK)


# ----------------------------------------------------------------------------- the lock

#: run folders this process holds (see :func:`locked`)
_HELD: set[Path] = set()


def _busy(out: Path) -> UserError:
    return UserError(
        f"another bayesdl process is writing {out}; wait for it or choose another --out"
    )


@contextmanager
def locked(out: Path) -> Iterator[None]:
    """Hold the run folder ``out`` for this process: a second writer gets a UserError."""
    flags = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
    try:
        fd = os.open(out / LOCK, flags, 0o644)
    except OSError as e:
        raise UserError(f"cannot write into {out}: {files._why(e)} ({LOCK})") from None
    key = out.resolve()
    try:
        files.check_plain(out / LOCK, "the lock")
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            if e.errno in (errno.EAGAIN, errno.EACCES):
                raise _busy(out) from None
            raise UserError(f"cannot lock {out / LOCK}: {e.strerror or e}") from None
        _HELD.add(key)
        yield
    finally:
        _HELD.discard(key)
        os.close(fd)


def _check_not_busy(out: Path) -> None:
    """Refuse a run folder that another process holds (see :func:`locked`), without taking
    it: a run being written is "busy", not "already there"."""
    if not out.is_dir() or out.resolve() in _HELD:
        return
    try:
        fd = os.open(out / LOCK, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:  # no lock file (or an unreadable one, which locked() reports)
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError as e:
        if e.errno in (errno.EAGAIN, errno.EACCES):
            raise _busy(out) from None
    finally:
        os.close(fd)  # closing drops the shared lock


# ----------------------------------------------------------------------------- before a fit


def prepare_out(out: Path, *, resume: bool, overwrite: bool, make: bool = True) -> None:
    """Check the run folder ``out`` (and make it unless ``make`` is false), refusing to replace
    anything in it without ``overwrite`` (and any of its files that is a link or a special file
    without ``overwrite``, which removes them)."""
    if files.entry(out, "--out") is not None and not files.is_dir(out, "--out"):
        raise UserError(f"--out {out} is a file, not a folder")
    _check_not_busy(out)
    if out.is_dir() and not overwrite:
        records.check_folder(out)
    existing = [n for n in RUN_FILES if files.entry(out / n) is not None]
    if resume and not (out / CHECKPOINT).exists():
        raise UserError(f"--resume: {out} holds no checkpoint to continue")
    if existing and not (resume or overwrite):
        how = (
            ": add --resume to continue it, --overwrite to replace it"
            if CHECKPOINT in existing
            else " but no checkpoint to resume from: add --overwrite to replace it"
        )
        raise UserError(
            f"{out} already holds a run ({', '.join(existing)}){how}, or choose another --out"
        )
    if not make:
        parent = next((p for p in (out, *out.parents) if p.exists()), Path("."))
        if not parent.is_dir():
            raise UserError(f"--out {out}: {parent} is a file, not a folder")
        if not os.access(parent, os.W_OK):
            raise UserError(f"cannot write into {parent} (read-only)")
        return
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"cannot make the run folder {out}: {e.strerror or e}") from None
    if not os.access(out, os.W_OK):
        raise UserError(f"cannot write into the run folder {out} (read-only)")


@contextmanager
def claimed(out: Path, *, resume: bool, overwrite: bool, main: bool = True) -> Iterator[None]:
    """Hold the run folder ``out`` while a run writes it: made, locked, checked again under the
    lock (another process may have finished a run there since), emptied for ``overwrite``;
    removed again when this call made it and the run fails before writing anything.
    Processes other than rank 0 (``main`` false) touch nothing."""
    created = not out.exists()
    if main:
        prepare_out(out, resume=resume, overwrite=overwrite)
    try:
        with locked(out) if main else contextlib.nullcontext():
            if main:
                prepare_out(out, resume=resume, overwrite=overwrite)
                files.remove_temporaries(out, RUN_FILES)  # of a process killed mid-write
            if main and overwrite and not resume:
                try:
                    for name in RUN_FILES:
                        files.remove(out / name)
                except UserError as e:
                    raise UserError(f"--overwrite: {e}") from None
                records.check_folder(out)
            yield
    except BaseException:
        if main and created:  # a folder this call made and left empty: remove it again
            with contextlib.suppress(OSError):  # (a folder made read-only meanwhile)
                (out / LOCK).unlink(missing_ok=True)
                out.rmdir()
        raise


# ----------------------------------------------------------------------------- --resume


def _python_classes(out: Path, old_args: dict, new_args: dict) -> None:
    """A run fitted with an optimizer or scheduler class of the user's own (recorded as
    ``python:Class``) resumes only when that class is given again, from Python."""
    for key, keyword in (("optimizer", "optim"), ("scheduler", "scheduler")):
        old = old_args.get(key)
        if isinstance(old, str) and old.startswith("python:") and new_args.get(key) != old:
            raise UserError(
                f"--resume: the run in {out} was fitted with the {key} class {old}, which a "
                f"run folder does not hold (nothing in it is executed): resume it from Python, "
                f"bayesdl.fit(..., {keyword}=<that class>, out={str(out)!r}, resume=True)"
            )


def check_resume(out: Path, record: dict) -> None:
    """Refuse to continue a run with other options or other data than it was started with."""
    if files.entry(out / CONFIG) is None:
        raise UserError(f"--resume: {out / CONFIG} is missing")
    old = records.read_config(out)
    old_args = old["args"]
    if old.get("model") != record["model"]:
        raise UserError(
            f"--resume: {out} is a run of model {old.get('model')!r}, not {record['model']!r}"
        )
    new_args = jsonable(record["args"])
    _python_classes(out, old_args, new_args)
    changed = sorted(
        k
        for k in set(old_args) | set(new_args)
        if k not in RESUMABLE
        and old_args.get(k) != new_args.get(k)
        # an option added since the run was made, left at "none" (--optim-arg, --scheduler)
        and not (k not in old_args and new_args.get(k) in (None, []))
    )
    if old.get("data_sha256") != record.get("data_sha256"):
        changed.append("data (the file's contents changed)")
    changed += _changed_code(old, record)
    if changed:
        shown = ", ".join(
            f"--{k.replace('_', '-')} {old_args.get(k)!r} -> {new_args.get(k)!r}"
            if k in old_args or k in new_args
            else k
            for k in changed
        )
        raise UserError(
            f"--resume with other settings than the run in {out} was made with ({shown}); "
            "resume with the same options, data and code, or fit into a new --out"
        )


def _changed_code(old: dict, record: dict) -> list[str]:
    """The code files of ``record`` (``model_file``, ``guide_file``, ``net_file``: each
    ``{"path", "sha256"}``) whose sha256 is not the one the run recorded: a checkpoint of other
    code. A run of an older bayesdl that recorded no sha256 cannot be checked and passes."""
    out = []
    for key, new in record.items():
        if not (isinstance(new, dict) and "sha256" in new):
            continue
        before = old.get(key)
        recorded = before.get("sha256") if isinstance(before, dict) else None
        if recorded is not None and recorded != new["sha256"]:
            what = key.replace("_", " ")
            out.append(f"the {what} {new.get('path')} changed since the run began (its sha256)")
    return out
