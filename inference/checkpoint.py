"""Atomic checkpoints: parameters, optimizer state, RNG states and step in one file.

Written to ``path.tmp`` and renamed over ``path`` (``os.replace`` is atomic on POSIX), so a
crash mid-write leaves the previous checkpoint intact.
"""

from __future__ import annotations

import os
import random
from pathlib import Path

import numpy as np
import pyro
import torch
from bayesdl.inference.errors import UserError
from torch.distributions import transform_to


def rng_state() -> dict:
    """Every RNG a fit draws from."""
    state = {
        "torch": torch.get_rng_state(),
        "python": random.getstate(),
        "numpy": np.random.get_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    """Restore what :func:`rng_state` saved."""
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save(path: Path, state: dict) -> None:
    """Write ``state`` to ``path`` atomically."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(state, tmp)
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    os.replace(tmp, path)


def load(path: Path) -> dict:
    """Read a checkpoint, with a clear error when it is missing or unreadable."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"no checkpoint at {path}")
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:  # noqa: BLE001 - any unpickling failure is a bad file
        raise UserError(f"cannot read checkpoint {path}: {e}") from None


def param_store_state() -> dict:
    """Unconstrained values and constraints of every entry of Pyro's parameter store."""
    return pyro.get_param_store().get_state()


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
                constraint = state["constraints"][name]
                store.setdefault(name, transform_to(constraint)(value), constraint)


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
