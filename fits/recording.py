"""What a run folder records of the run that made it: ``config.json`` (the model's name, its
options, the checksums of its data and code) and ``data.npz`` (data given from Python)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bayesdl.fits.folder import write_json
from bayesdl.fits.records import CONFIG, DATA_FILE
from bayesdl.inference import files
from bayesdl.inference.errors import UserError
from bayesdl.workflows import trust
from bayesdl.workflows.base import Workflow


def run_record(workflow: Workflow) -> dict[str, Any]:
    """What ``config.json`` records: the model's name, its options (those of the workflow's
    :class:`~bayesdl.workflows.fit_options.FitOptions`, derived values included:
    :meth:`~bayesdl.workflows.base.Workflow.recorded_args`) and the data's checksum."""
    record = {"model": type(workflow).name, "args": workflow.recorded_args()}
    record.update(workflow.record())
    return record


def folder_record(workflow: Workflow) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """What a run folder records (:func:`run_record`), and the arrays of data given from
    Python, which the folder keeps as ``data.npz`` (its options then name that file; scalars
    become ``--arg name=value``), so that ``bayesdl.load``, ``evaluate`` and ``predict`` find
    them. Write both with :func:`write_record`."""
    record, arrays = run_record(workflow), {}
    given = getattr(workflow, "given_data", None)
    if given is None:
        return record, arrays
    args = dict(record["args"])
    extra = list(args.get("arg") or [])
    for k, v in given.items():
        if torch.is_tensor(v):
            arrays[k] = v.detach().cpu().numpy()
        elif isinstance(v, np.ndarray):
            arrays[k] = v
        elif v is None or isinstance(v, bool | int | float | str):
            extra.append(f"{k}={json.dumps(v)}")
        else:
            raise UserError(
                f"cannot save data[{k!r}] ({type(v).__name__}): a run folder holds arrays and "
                "scalars only"
            )
    record["args"] = {**args, "data": DATA_FILE, "arg": extra}
    record["data_in_run"] = DATA_FILE
    return record, arrays


def write_record(out: Path, record: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
    """``config.json`` (and ``data.npz`` for data given from Python) of :func:`folder_record`;
    the code files it names join this user's record of fitted code (:func:`trust.remember`)."""
    if record.get("data_in_run"):
        files.write_with(out / DATA_FILE, lambda f: np.savez(f, **arrays))
    write_json(out / CONFIG, record)
    trust.remember(record)
