"""Atomic checkpoints: parameters, optimizer state, RNG states and step in one file.

Written to a fresh temporary file of a random name next to ``path`` and renamed over it
(:func:`bayesdl.inference.files.write_with`: never through a link), so a crash mid-write leaves
the previous checkpoint intact.

A checkpoint holds tensors and plain data only (dicts, lists, tuples, strings, numbers, None)
and is read with ``torch.load(..., weights_only=True)``: loading a run folder never unpickles
Python objects, so a crafted ``checkpoint.pt`` cannot run code. Before that it must be a
regular file (not a link, a pipe or a device) whose records are stored uncompressed, as
``torch.save`` writes them (reading it takes no more memory than its size) and whose pickled
part is at most 64 MB; after it, :mod:`bayesdl.inference.checkpoint_check` checks its
entries. What is not plain data is converted here: numpy's RNG state becomes a tensor and
numbers, and the constraints of Pyro's parameter store become names (``"positive"``) or
descriptions of their class and attributes (``interval(lo, hi)``, ``independent(base, n)``,
...).
"""

from __future__ import annotations

import pickle
import random
import sys
import warnings
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pyro
import pyro.distributions.constraints as pyro_constraints
import torch
from torch.distributions import constraints as torch_constraints
from torch.distributions import transform_to

import bayesdl.inference.checkpoint_check as checkpoint_check
import bayesdl.inference.files as files
from bayesdl.inference.errors import UserError

#: what :func:`save` writes into ``state["format"]``; checkpoints of format 1 were pickles
FORMAT = 2

Constraint = torch_constraints.Constraint


def rng_state() -> dict:
    """Every RNG a fit draws from, as tensors and plain numbers."""
    name, keys, pos, has_gauss, cached_gaussian = np.random.get_state()
    version, internal, gauss_next = random.getstate()
    state = {
        "torch": torch.get_rng_state(),
        "python": [version, list(internal), gauss_next],
        "numpy": {
            "name": str(name),
            "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached_gaussian),
        },
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    """Restore what :func:`rng_state` saved (checkpoints' states are checked by :func:`load`)."""
    torch.set_rng_state(state["torch"])
    version, internal, gauss_next = state["python"]
    random.setstate((int(version), tuple(int(i) for i in internal), gauss_next))
    n = state["numpy"]
    keys = n["keys"].cpu().numpy().astype(np.uint32)
    np.random.set_state((n["name"], keys, n["pos"], n["has_gauss"], n["cached_gaussian"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save(path: Path, state: dict) -> None:
    """Write ``state`` (tensors and plain data, see the module's docstring) to ``path``
    atomically."""
    path = Path(path)
    # a file object of Python's: a failed write is an OSError (torch's own is a RuntimeError)
    files.write_with(
        path, lambda f: torch.save({**state, "format": FORMAT}, f), sync=True, what="checkpoint"
    )


def _older(path: Path) -> UserError:
    return UserError(
        f"checkpoint {path} was made by an older bayesdl (or is not a bayesdl checkpoint): it "
        "holds more than tensors and plain data, and Python objects are not unpickled as they "
        "could run code; refit the run (bayesdl fit ... --overwrite), or load it with the "
        "bayesdl version that made it if you trust the file"
    )


def load(path: Path, *, resume: bool = False) -> dict:
    """Read a checkpoint (tensors and plain data only, nothing is unpickled), with a clear
    error when it is missing, unreadable, of an older format or holds entries a fit does not
    write (``resume``: also when it lacks what ``--resume`` needs)."""
    path = Path(path)
    if files.entry(path, "checkpoint") is None:
        raise UserError(f"no checkpoint at {path}")
    with files.open_regular(path, "checkpoint", follow=False) as f:
        _check_records(f, path)
        f.seek(0)
        try:
            with warnings.catch_warnings():  # torch's notes on a foreign pickle's protocol
                warnings.simplefilter("ignore")
                state = torch.load(f, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError:  # a Python object: an older checkpoint, or a crafted one
            raise _older(path) from None
        except Exception as e:  # noqa: BLE001 - a truncated or foreign file
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise UserError(f"cannot read checkpoint {path}: {first}") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise _older(path)
    checkpoint_check.check(state, path, resume=resume)
    return state


def _check_records(f, path: Path) -> None:
    """A zip checkpoint (torch's format) must store its records uncompressed, as torch.save
    does, and its pickle within :data:`~bayesdl.inference.files.PICKLE_LIMIT`: what torch then
    allocates is bounded by the file's own size. (Other files are torch's legacy format.)"""
    if not zipfile.is_zipfile(f):
        return
    f.seek(0)
    try:
        with zipfile.ZipFile(f) as z:
            infos = z.infolist()
    except (zipfile.BadZipFile, OSError, ValueError) as e:
        raise UserError(f"cannot read checkpoint {path}: {e}") from None
    for info in infos:
        if info.compress_type != zipfile.ZIP_STORED:
            raise UserError(
                f"checkpoint {path}: record {info.filename!r} is compressed, which torch.save "
                "never does; the file was not written by bayesdl"
            )
        if info.filename.endswith(".pkl") and info.file_size > files.PICKLE_LIMIT:
            raise UserError(
                f"checkpoint {path}: its pickled part is {info.file_size / files.MB:.0f} MB, "
                f"more than the {files.PICKLE_LIMIT // files.MB} MB bayesdl reads"
            )


# ----------------------------------------------------------------------------- constraints


def _named_constraints() -> dict[str, Constraint]:
    """Module-level constraint objects of torch and Pyro, by name (Pyro's re-exports torch's)."""
    named: dict[str, Constraint] = {}
    for module in (pyro_constraints, torch_constraints):
        for name, obj in vars(module).items():
            if isinstance(obj, Constraint) and not name.startswith("_"):
                named.setdefault(name, obj)
    return named


_NAMED = _named_constraints()
_NAME_OF = {id(obj): name for name, obj in reversed(list(_NAMED.items()))}


def encode_constraint(c: Any) -> dict:
    """A constraint as plain data: ``{"name": "positive"}`` for torch's and Pyro's named
    constraints; ``{"class": "module:Class", "attrs": {...}}`` for the others (``interval``,
    ``greater_than``, ``independent``, ``cat``, ...), attributes encoded recursively. Never
    fails: what cannot be described is recorded as such and refused by :func:`decode_constraint`.
    """
    name = _NAME_OF.get(id(c))
    if name is not None:
        return {"name": name}
    cls = type(c)
    out: dict[str, Any] = {"class": f"{cls.__module__}:{cls.__qualname__}"}
    try:
        out["attrs"] = {k: _encode_value(v) for k, v in vars(c).items()}
    except TypeError as e:  # an attribute that is not plain data
        out["unencodable"] = str(e)
    return out


def _encode_value(v: Any) -> Any:
    if isinstance(v, Constraint):
        return {"constraint": encode_constraint(v)}
    if torch.is_tensor(v):
        return {"tensor": v.detach().cpu()}
    if v is None or isinstance(v, bool | int | float | str):
        return {"value": v}
    if isinstance(v, list | tuple):
        return {"list" if isinstance(v, list) else "tuple": [_encode_value(x) for x in v]}
    raise TypeError(f"attribute of type {type(v).__name__}")


def _decode_value(v: dict, device: torch.device | None) -> Any:
    if "constraint" in v:
        return decode_constraint(v["constraint"], device)
    if "tensor" in v:
        return v["tensor"] if device is None else v["tensor"].to(device)
    if "value" in v:
        return v["value"]
    if "list" in v:
        return [_decode_value(x, device) for x in v["list"]]
    return tuple(_decode_value(x, device) for x in v["tuple"])


def decode_constraint(d: dict, device: torch.device | None = None) -> Constraint:
    """The constraint :func:`encode_constraint` described (tensor attributes such as interval
    bounds on ``device``). Classes are looked up only among modules already imported (nothing
    is imported), and must be constraint classes."""
    if "name" in d:
        if d["name"] not in _NAMED:
            raise ValueError(f"unknown constraint {d['name']!r}")
        return _NAMED[d["name"]]
    module, _, qualname = str(d.get("class", "")).partition(":")
    if "unencodable" in d:
        raise ValueError(f"constraint {qualname} could not be saved ({d['unencodable']})")
    cls: Any = sys.modules.get(module)
    for part in qualname.split("."):
        ok = part.isidentifier() and not part.startswith("__")
        cls = getattr(cls, part, None) if ok else None
    if not (isinstance(cls, type) and issubclass(cls, Constraint)):
        raise ValueError(f"constraint class {qualname} of {module} is not loaded")
    c = object.__new__(cls)  # no __init__: the saved attributes are set as they were
    c.__dict__.update({k: _decode_value(v, device) for k, v in d["attrs"].items()})
    return c


def param_store_state() -> dict:
    """Unconstrained values and (encoded) constraints of every entry of Pyro's parameter
    store."""
    state = pyro.get_param_store().get_state()
    return {
        "params": {k: v.detach() for k, v in state["params"].items()},
        "constraints": {k: encode_constraint(c) for k, c in state["constraints"].items()},
    }


def load_param_store_state(state: dict, device: torch.device) -> None:
    """Write saved values *in place* into existing parameters (so modules and optimizers that
    hold them see the change) and create the entries that do not exist yet."""
    store = pyro.get_param_store()
    existing = dict(store.named_parameters())
    with torch.no_grad():
        for name, value in state["params"].items():
            value = value.to(device)
            if name in existing:
                if existing[name].shape != value.shape:
                    raise UserError(
                        f"checkpoint parameter {name} has shape {tuple(value.shape)}, the model "
                        f"has {tuple(existing[name].shape)}: was it made with other options?"
                    )
                existing[name].copy_(value)
            else:
                try:
                    constraint = decode_constraint(state["constraints"][name], device)
                    constrained = transform_to(constraint)(value)
                except Exception as e:  # noqa: BLE001 - a constraint the value does not fit
                    raise UserError(
                        f"checkpoint parameter {name}: cannot restore its constraint ({e}); "
                        "load it where the model creates this parameter"
                    ) from None
                store.setdefault(name, constrained, constraint)


load_optimizer_state = checkpoint_check.load_optimizer_state


def module_states(modules) -> list[dict | None]:
    """``state_dict()`` of each ``nn.Module`` among ``modules`` (``None`` for functions)."""
    return [m.state_dict() if isinstance(m, torch.nn.Module) else None for m in modules]


def load_module_states(modules, states: list[dict | None] | None) -> None:
    """Copy saved module states in place (the optimizer keeps holding the same tensors)."""
    if states is None:
        return
    for m, state in zip(modules, states, strict=False):
        if isinstance(m, torch.nn.Module) and state is not None:
            try:
                m.load_state_dict(state)
            except RuntimeError as e:
                raise UserError(
                    f"checkpoint does not fit this model ({str(e).splitlines()[0]}): "
                    "was it made with other options?"
                ) from None
