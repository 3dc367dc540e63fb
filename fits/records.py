"""A run folder's files as bayesdl reads them: regular files only (never through a link, a
pipe or a device), within size limits, and JSON of the types bayesdl writes there.

A run folder holds ``config.json`` (the options), ``summary.json``, ``checkpoint.pt``,
``metrics.jsonl``, ``evaluation.json``, ``draws.npz`` (NUTS), ``data.npz`` (data given from
Python), ``prototype.npz`` (a few rows for ``predict``), figures and the lock
``.bayesdl.lock``; what each may hold and what bayesdl does with it: ``docs/threat_model.md``.
"""

from __future__ import annotations

import numbers
import os
from pathlib import Path
from typing import Any

from bayesdl.inference import files
from bayesdl.inference.errors import UserError
from bayesdl.inference.train import CHECKPOINT, METRICS

CONFIG = "config.json"
SUMMARY = "summary.json"
EVALUATION = "evaluation.json"
LOCK = ".bayesdl.lock"
PROTOTYPE = "prototype.npz"
DRAWS = "draws.npz"
#: the data of a model fitted from Python (``bayesdl.fit(model, data={...})``), in its run folder
DATA_FILE = "data.npz"
#: what a run folder may hold before `fit` writes into it without --overwrite/--resume
RUN_FILES = (CONFIG, SUMMARY, CHECKPOINT, METRICS, EVALUATION, DRAWS, PROTOTYPE)
#: every file bayesdl reads or writes in a run folder under a fixed name
FOLDER_FILES = (*RUN_FILES, DATA_FILE, LOCK)
#: the kinds of file bayesdl writes into a run folder (figures and samples included)
FOLDER_SUFFIXES = (".json", ".jsonl", ".pt", ".npz", ".png", ".html")


def check_folder(run_dir: str | Path) -> None:
    """Refuse a run folder in which one of bayesdl's files (or any ``.json``, ``.jsonl``,
    ``.pt``, ``.npz``, ``.png``, ``.html``) is a link, a folder, a pipe or a device: a run
    folder bayesdl wrote holds regular files only, so such an entry was planted."""
    run_dir = Path(run_dir)
    for name in FOLDER_FILES:
        files.check_plain(run_dir / name, "run file")
    try:
        entries = list(os.scandir(run_dir))
    except OSError:
        return  # the folder's own problems are reported where it is used
    for e in entries:
        if e.name.endswith(FOLDER_SUFFIXES) and not e.is_file(follow_symlinks=False):
            files.check_plain(run_dir / e.name, "run file")


def _real(v: Any) -> bool:
    return v in ("inf", "-inf") or (isinstance(v, numbers.Real) and not isinstance(v, bool))


def _int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _text(v: Any) -> bool:
    return isinstance(v, str)


def _maybe(test):
    return lambda v: v is None or test(v)


def _record(v: Any) -> bool:  # {"path": ..., "sha256": ...} of a code file
    return isinstance(v, dict) and all(v.get(k) is None or _text(v[k]) for k in ("path", "sha256"))


#: top-level entries of config.json bayesdl reads, and their types
CONFIG_TYPES = {
    "model": _text,
    "args": lambda v: isinstance(v, dict),
    "data_in_run": _maybe(lambda v: _text(v) and v == Path(v).name and v.endswith(".npz")),
    "data_sha256": _maybe(_text),
    "model_file": _maybe(_record),
    "guide_file": _maybe(_record),
    "net_file": _maybe(_record),
}
#: entries of config.json's args that no option declares
ARG_TYPES = {
    "model_file": _maybe(_text),
    "model_function": _maybe(lambda v: _text(v) and v.isidentifier()),
}


def read_config(run_dir: str | Path) -> dict[str, Any]:
    """``config.json`` of a run folder, checked: a regular file (not a link) of at most 64 MB,
    JSON nested at most 64 levels, a dict with a model name, its options and the entries
    bayesdl reads of the types it writes (each option's type: :func:`check_args`)."""
    path = Path(run_dir) / CONFIG
    cfg = files.read_json(path, "run config", follow=False)
    if not isinstance(cfg, dict) or not _text(cfg.get("model")) or "args" not in cfg:
        raise UserError(f'{path} is not a bayesdl run config (needs "model" and "args")')
    for key, test in CONFIG_TYPES.items():
        if key in cfg and not test(cfg[key]):
            raise UserError(f"{path}: {key!r} is {_short(cfg[key])}, not what bayesdl writes")
    for key, value in cfg["args"].items():
        if not key.isidentifier() or key.startswith("_"):
            raise UserError(f"{path}: {key!r} is not an option name")
        if key in ARG_TYPES and not ARG_TYPES[key](value):
            raise UserError(f"{path}: option {key!r} is {_short(value)}, not what bayesdl writes")
    return cfg


def check_args(workflow: type, cfg: dict[str, Any], path: str | Path) -> None:
    """Refuse saved options whose values are not of their option's type or choices (as
    ``bayesdl fit`` would have parsed them); options this version does not know are kept."""
    from bayesdl.workflows.options import option_specs, saved_value_error

    specs = option_specs(workflow)
    for key, value in cfg["args"].items():
        spec = specs.get(key)
        why = saved_value_error(spec, value) if spec is not None else None
        if why is not None:
            raise UserError(
                f"{path}: option {key!r} ({spec.flag}) is {why}; bayesdl never writes that "
                "(was the file edited?)"
            )


#: entries of summary.json that bayesdl reads back, and their types
SUMMARY_TYPES = {
    "model": _text,
    "guide": _maybe(_text),
    "method": _maybe(_text),
    "steps": _maybe(_int),
    "final_elbo": _maybe(_real),
    "wall_seconds": _maybe(_real),
    "steps_per_second": _maybe(_real),
    "compile_seconds": _maybe(_real),
    "compiled": _maybe(lambda v: isinstance(v, bool)),
    "device": _maybe(_text),
    "converged": _maybe(lambda v: isinstance(v, bool)),
    "interrupted": _maybe(lambda v: isinstance(v, bool)),
    "divergences": _maybe(_int),
    "samples": _maybe(_int),
    "chains": _maybe(_int),
    "chain_stats": _maybe(
        lambda v: (
            isinstance(v, list)
            and all(isinstance(c, dict) and all(_maybe(_real)(x) for x in c.values()) for c in v)
        )
    ),
    "posterior": _maybe(lambda v: isinstance(v, dict)),
    "convergence": _maybe(lambda v: isinstance(v, dict)),
}


def read_summary(run_dir: str | Path) -> dict[str, Any] | None:
    """``summary.json`` of a run folder (``None`` when there is none), read as
    :func:`read_config` reads, its entries of the types bayesdl writes; ``"inf"`` strings (how
    bayesdl writes infinities) become floats."""
    path = Path(run_dir) / SUMMARY
    if files.entry(path, "run summary") is None:
        return None
    summary = files.read_json(path, "run summary", follow=False)
    if not isinstance(summary, dict):
        raise UserError(f"{path} is not a bayesdl run summary (a JSON object)")
    for key, test in SUMMARY_TYPES.items():
        if key in summary and not test(summary[key]):
            raise UserError(f"{path}: {key!r} is {_short(summary[key])}, not what bayesdl writes")
    for key in ("final_elbo", "wall_seconds"):
        if summary.get(key) in ("inf", "-inf"):
            summary[key] = float(summary[key])
    return summary


def metric_rows(path: str | Path) -> list[dict[str, Any]]:
    """The rows of ``metrics.jsonl`` that hold an integer ``step`` and a numeric ``elbo``
    (others, such as a line torn by a kill, are skipped); read as a regular file, never
    through a link, at most :data:`~bayesdl.inference.files.METRICS_LIMIT`."""
    rows = []
    if files.entry(path, "metrics") is None:
        return rows
    for line in files.read_lines(path, "metrics"):
        if not line.startswith("{") or len(line) > 1 << 16:
            continue
        try:
            row = files.parse_json(line, str(path))
        except UserError:
            continue
        if isinstance(row, dict) and _int(row.get("step")) and _real(row.get("elbo")):
            rows.append(row)
    return rows


def _short(v: Any) -> str:
    text = repr(v)
    return text if len(text) <= 60 else text[:57] + "..."
