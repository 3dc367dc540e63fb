"""Device choice: ``cpu``, ``cuda`` (or ``cuda:N``) or ``auto``, always explicit."""

from __future__ import annotations

import os

import torch

from bayesdl.inference.errors import UserError


def resolve_device(name: str = "cpu") -> torch.device:
    """Map ``cpu | cuda[:N] | auto`` to a :class:`torch.device`; clear error without CUDA."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cpu":
        return torch.device("cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise UserError(
                f"--device {name} asked for, but this torch ({torch.__version__}) sees no CUDA "
                "device; use --device cpu or auto, or install a CUDA build of torch"
            )
        dev = torch.device(name)
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise UserError(f"--device {name}: only {torch.cuda.device_count()} CUDA device(s)")
        return dev
    raise UserError(f"unknown device {name!r}; choose cpu, cuda or auto")


def check_threads(n: int, flag: str = "--threads") -> None:
    """Refuse a number of torch threads below 1 or above this machine's CPUs (torch accepts
    100000 and then crashes: a segmentation fault in its thread pool, measured)."""
    cpus = os.cpu_count() or 1
    if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= cpus:
        raise UserError(f"{flag} must be between 1 and {cpus} (this machine's CPUs), got {n!r}")
