"""Device choice: ``cpu``, ``cuda`` (or ``cuda:N``) or ``auto``, always explicit."""

from __future__ import annotations

import os

import torch

from bayesdl.inference.errors import UserError

#: a step whose parameters and (mini)batch hold fewer numbers than this runs on one torch
#: thread unless told otherwise: its time is Python's and Pyro's, and more threads only
#: spin-wait (the coin, 2,000 steps, on a busy 2-core machine: 10.4 s of CPU and 57 s on one
#: thread, 23.7 s and 83 s on two; `benchmarks/threads.py`, figures in the README)
SMALL_STEP = 100_000
#: the most threads chosen for a larger step (intra-op parallelism of one SVI step's matmuls
#: gains little beyond this, and the machine may have other work)
MAX_AUTO_THREADS = 4


def auto_threads(params, data: dict, batch_share: float = 1.0) -> int:
    """Torch threads for a fit that names none: 1 when ``sum numel(params) + batch_share *
    sum numel(data) < SMALL_STEP`` (``batch_share``: B / N with minibatches), else one per CPU,
    at most :data:`MAX_AUTO_THREADS`."""
    numbers = sum(p.numel() for p in params)
    numbers += batch_share * sum(v.numel() for v in data.values() if torch.is_tensor(v))
    if numbers < SMALL_STEP:
        return 1
    return max(1, min(MAX_AUTO_THREADS, os.cpu_count() or 1))


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
