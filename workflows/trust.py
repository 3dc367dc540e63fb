"""Which code bayesdl imports: code the user names, never code because a folder names it.

The rule (``docs/threat_model.md``). A Python file is imported when

* the user names it now: ``fit FILE.py:model``, ``--guide FILE.py:guide``, ``--net
  FILE.py:make_net``, ``--plugin FILE``; ``--model-file FILE`` of ``evaluate`` / ``predict`` /
  ``sample`` / ``compare``; ``bayesdl.fit("FILE.py:model")``, ``bayesdl.load(dir,
  model_files=[FILE])``; or
* a run folder's ``config.json`` names it (``model_file``, a guide ``FILE.py:fn``, ``net``) and
  **this user fitted that very file**: this user's record of fitted code, ``trusted.json`` in
  ``$XDG_STATE_HOME/bayesdl`` (default ``~/.local/state/bayesdl``), written by every fit that
  writes a run folder, holds the sha256 of the file's current contents under its resolved
  path. A folder cannot write that record, and a checksum a folder records authenticates
  nothing, so ``/proc/self/cwd/FOLDER/model.py``, a relative path or a file that changed since
  the fit are refused in one line (name the file again to import it).

The bytes checked are the bytes executed: :func:`source` reads a file once, and the importer
compiles those bytes (no second read a file swapped meanwhile could change).
"""

from __future__ import annotations

import contextlib
import contextvars
import fcntl
import hashlib
import os
import warnings
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from bayesdl.inference import files
from bayesdl.inference.errors import UserError

RECORD = "trusted.json"
MAX_FILES, MAX_VERSIONS = 2000, 20  # the record keeps the newest ones
#: options of ``config.json`` that name code -> (what it is, the top-level entry of its sha256)
CODE_OPTIONS = {
    "model_file": ("model file", "model_file"),
    "guide": ("guide file", "guide_file"),
    "net": ("--net file", "net_file"),
}
HINT = "if you trust it, name it again: --model-file FILE (Python: model_files=[FILE])"

_NAMED: contextvars.ContextVar[tuple[Path, ...]] = contextvars.ContextVar("named", default=())
#: while a run folder's workflow is rebuilt: the code it may import, ``{path: (file, sha)}``
_FOLDER: contextvars.ContextVar[dict | None] = contextvars.ContextVar("folder", default=None)
_IMPORTED: dict[Path, str] = {}  # file -> sha256 of the bytes last imported from it
_WARNED: set[str] = set()


def is_file_spec(spec: str) -> bool:
    """``path/to/file.py:function`` (or a bare ``file.py``)."""
    return spec.endswith(".py") or (":" in spec and spec.rpartition(":")[0].endswith(".py"))


def spec_file(spec: str) -> str:
    """The file of ``FILE.py:function`` (or ``FILE.py``)."""
    return spec.rpartition(":")[0] if ":" in spec and not spec.endswith(".py") else spec


def resolved(path: str | Path) -> Path:
    """``path`` absolute, links resolved (a loop or an impossible path: made absolute only)."""
    p = Path(path).expanduser()
    try:
        return p.resolve()
    except (RuntimeError, OSError):
        return Path(os.path.abspath(p))


def sha256(data: bytes) -> str:
    """Hex sha256 of ``data``."""
    return hashlib.sha256(data).hexdigest()


def state_dir() -> Path:
    """``$XDG_STATE_HOME/bayesdl`` (default ``~/.local/state/bayesdl``)."""
    base = os.environ.get("XDG_STATE_HOME") or "~/.local/state"
    return Path(base).expanduser() / "bayesdl"


def read(path: str | Path, what: str = "model file") -> tuple[Path, bytes]:
    """The resolved path and bytes of a ``.py`` file (a regular file, at most
    :data:`~bayesdl.inference.files.CODE_LIMIT`)."""
    p = Path(path).expanduser()
    st = files.entry(p, what)
    if st is None or not os.path.exists(p):
        raise UserError(f"{what} {p} does not exist")
    if os.path.isdir(p) or p.suffix != ".py":
        raise UserError(f"{what} {p} is not a Python file (.py)")
    full = resolved(p)
    return full, files.read_bytes(full, what, files.CODE_LIMIT, follow=True)


def source(path: str | Path, what: str = "model file") -> tuple[Path, bytes]:
    """The file and the bytes to import for ``path``, by the rule: what the user names now
    passes; while a run folder is loaded (:func:`folder_code`) only what it was approved."""
    approved = _FOLDER.get()
    if approved is None:
        return read(path, what)
    entry = approved.get(str(path)) or approved.get(str(resolved(path)))
    if entry is None:
        raise UserError(
            f"rebuilding the run of {approved['']} would import the {what} {path}, which "
            f"bayesdl does not do because a run folder names it; {HINT}"
        )
    if isinstance(entry, UserError):  # the folder names it, and it was refused
        raise entry
    full, data = read(entry[0], what)  # the file approved (the user's copy, if named)
    if sha256(data) != entry[1]:
        raise UserError(f"{what} {full} changed while the run was loaded; try again")
    return full, data


def imported(full: Path, digest: str) -> None:
    """Note the sha256 of the bytes imported from ``full`` (what :func:`remember` records)."""
    _IMPORTED[full] = digest


def file_record(path: str | Path) -> dict[str, str | None]:
    """``config.json``'s record of a code file: its resolved path and the sha256 of what was
    imported from it (else of its contents; ``None`` when unreadable). Never raises."""
    full = resolved(path)
    digest = _IMPORTED.get(full)
    if digest is None:
        with contextlib.suppress(UserError):
            digest = sha256(read(full)[1])
    return {"path": str(full), "sha256": digest}


def file_records(args: dict[str, Any]) -> dict[str, dict]:
    """The records of the code files a run's options name (``model_file``, a guide file,
    ``net``), for ``config.json``'s top level."""
    out = {}
    for option, (_, key) in CODE_OPTIONS.items():
        value = args.get(option)
        if isinstance(value, str) and value and (option == "model_file" or is_file_spec(value)):
            out[key] = file_record(spec_file(value))
    return out


# ----------------------------------------------------------------------------- the record


@contextlib.contextmanager
def _record_lock() -> Iterator[Path]:
    folder = state_dir()
    folder.mkdir(parents=True, exist_ok=True)
    flags = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC
    fd = os.open(folder / (RECORD + ".lock"), flags, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield folder / RECORD
    finally:
        os.close(fd)


def _load(path: Path) -> dict[str, list[str]]:
    if files.entry(path, "record") is None:
        return {}
    record = files.read_json(path, "bayesdl's record of fitted code", 16 * files.MB, follow=True)
    if not isinstance(record, dict):
        return {}
    return {
        k: [d for d in v if isinstance(d, str)]
        for k, v in record.items()
        if isinstance(k, str) and isinstance(v, list)
    }


def trusted() -> dict[str, list[str]]:
    """This user's record: resolved path -> sha256 of the versions fitted (empty if none)."""
    try:
        return _load(state_dir() / RECORD)
    except UserError as e:
        _warn(f"bayesdl's record of fitted code is unreadable, so none is trusted ({e})")
        return {}


def remember(record: dict[str, Any]) -> None:
    """Add the code files a run folder's ``config.json`` (``record``) names, by resolved path
    and sha256, to this user's record; a failure is a warning (the run then needs its files
    named again to be reopened), never an error."""
    new = [(str(resolved(p)), d) for _, p, d in references(record) if d and Path(p).is_absolute()]
    if not new:
        return
    import json

    try:
        with _record_lock() as path:
            record_ = _load(path)
            for full, digest in new:
                versions = [d for d in record_.pop(full, []) if d != digest]
                record_[full] = (versions + [digest])[-MAX_VERSIONS:]
            kept = dict(list(record_.items())[-MAX_FILES:])  # the newest files last
            files.write_text(path, json.dumps(kept, indent=1) + "\n")
    except (OSError, UserError) as e:
        _warn(
            f"cannot record the fitted code in {state_dir() / RECORD} ({e}); reopening this "
            "run will need its code named again (--model-file)"
        )


def _warn(message: str, where: str = "bayesdl", line: int = 0) -> None:
    if message not in _WARNED:
        _WARNED.add(message)
        warnings.warn_explicit(message, UserWarning, where, line)


# ----------------------------------------------------------------------------- folders


def references(cfg: dict[str, Any]) -> list[tuple[str, str, str | None]]:
    """``(what, path, recorded sha256)`` of every code file ``config.json`` names."""
    args = cfg.get("args") if isinstance(cfg, dict) else None
    if not isinstance(args, dict):
        return []
    out = []
    for option, (what, key) in CODE_OPTIONS.items():
        value = args.get(option)
        if not isinstance(value, str) or not value:
            continue
        if option != "model_file" and not is_file_spec(value):
            continue
        rec = cfg.get(key)
        digest = rec.get("sha256") if isinstance(rec, dict) else None
        out.append((what, spec_file(value), digest if isinstance(digest, str) else None))
    return out


@contextlib.contextmanager
def named(paths: Iterable[str | Path]) -> Iterator[None]:
    """The code files the user names for this command (``--model-file``, ``model_files=``)."""
    chosen = []
    for p in paths:
        full, _ = read(p, "--model-file")
        chosen.append(full)
    token = _NAMED.set(tuple(chosen))
    try:
        yield
    finally:
        _NAMED.reset(token)


@contextlib.contextmanager
def folder_code(cfg_path: Path, cfg: dict[str, Any]) -> Iterator[None]:
    """Rebuild a run from its ``config.json`` (``cfg``): while inside, :func:`source` imports
    only the code files :func:`approve` allows."""
    token = _FOLDER.set(approve(cfg_path, cfg))
    try:
        yield
    finally:
        _FOLDER.reset(token)


def approve(cfg_path: Path, cfg: dict[str, Any]) -> dict:
    """``{path as config.json names it: (file to import, its sha256)}`` for every code file
    the folder names, or the one-line :class:`UserError` that :func:`source` raises if the
    run's workflow imports it (a built-in model's run imports none of them)."""
    approved: dict = {"": str(cfg_path)}
    record = None
    for what, path, recorded in references(cfg):
        if record is None:
            record = trusted()
        try:
            entry = _decide(cfg_path, what, path, recorded, record)
        except UserError as e:
            entry = e
        approved[path] = approved[str(resolved(path))] = entry
    return approved


def _decide(cfg_path: Path, what: str, path: str, recorded: str | None, record: dict):
    named = _NAMED.get()
    here = resolved(path) if Path(path).is_absolute() else None
    if resolved(path) in named:  # named again now: the user's choice
        full, data = read(resolved(path), what)
        _changed(cfg_path, what, full, recorded, sha256(data))
        return full, sha256(data)
    if here is not None and os.path.exists(here):
        full, data = read(here, what)
        digest = sha256(data)
        if digest in record.get(str(full), []):  # this user fitted these very bytes
            _changed(cfg_path, what, full, recorded, digest)
            return full, digest
    for other in named:  # a copy of the recorded file, named now (e.g. on another machine)
        data = read(other, what)[1]
        if recorded is not None and sha256(data) == recorded:
            return other, recorded
    if here is None:
        why = "by a relative path"
    elif not os.path.exists(here):
        why = "which does not exist here"
    elif str(here) in record:
        why = "which changed since you fitted it (its sha256 is not one you fitted)"
    else:
        why = "which you have not fitted (bayesdl's record of your fitted code lacks it)"
    raise UserError(
        f"{cfg_path} names the {what} {path}, {why}: bayesdl imports no code because a run "
        f"folder names it; {HINT}"
    )


def _changed(cfg_path: Path, what: str, full: Path, recorded: str | None, actual: str) -> None:
    if recorded is not None and recorded != actual:
        _warn(
            f"the {what} {full} is not the one this run was fitted with (its sha256 differs "
            "from config.json's): loading it anyway, the saved parameters may not fit it",
            str(cfg_path),
        )
