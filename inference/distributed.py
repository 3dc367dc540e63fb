"""Data-parallel SVI on PyTorch's own distributed engine, for runs launched by ``torchrun``.

With ``P`` processes each step takes a global minibatch of ``B`` indices (the same permutation
on every process: same seed, same RNG draws), process ``r`` keeps its share of ``b = B / P``
(:class:`~inference.batching.EpochBatcher` with ``rank``/``world``; like torch's
``DistributedSampler`` with ``set_epoch``: a fresh permutation each epoch, split by rank), and
the model's ``pyro.plate("data", N)`` scales its likelihood by ``N / b``, so every process's
loss estimates the full-data ELBO::

    L_r = KL(q || p) - (N / b) sum_{i in shard r} E_q log p(x_i | z)

:class:`~torch.nn.parallel.DistributedDataParallel` averages the gradients,
``(1/P) sum_r grad L_r = grad [KL - (N / B) sum_{i in batch} E_q log p(x_i | z)]``: the gradient
one process would take on the global batch. Reparameterised noise is drawn from the same RNG
state on every process, so for global latents the P-process run *is* the one-process run (up
to float summation order); local latents (a VAE's ``z_i``) get unbiased, not identical, noise.

DDP needs a module whose ``parameters()`` are the trained tensors and whose ``forward`` is the
loss (what Pyro's ``ELBOModule`` is for ``nn.Module`` models and guides). Ours come from Pyro's
parameter store, so :meth:`DistContext.wrap` makes the store hold :class:`~torch.nn.Parameter`
objects (as ``PyroModule`` itself does when it meets a plain tensor there) and hands them to a
small module that DDP wraps.

Environment: ``WORLD_SIZE``, ``RANK``, ``LOCAL_RANK``, ``MASTER_ADDR``, ``MASTER_PORT`` (set by
``torchrun``); ``BAYESDL_DIST_TIMEOUT`` (seconds, default 300) bounds every collective, so a
lost peer ends the run with an error rather than a hang; ``BAYESDL_DDP_FIND_UNUSED=1`` for a
model that leaves some parameters without a gradient on some steps.
"""

from __future__ import annotations

import atexit
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import pyro
import torch
import torch.distributed as dist
from pyro import poutine
from torch.nn.parallel import DistributedDataParallel

from bayesdl.inference.errors import UserError

TIMEOUT_ENV = "BAYESDL_DIST_TIMEOUT"
DEFAULT_TIMEOUT_S = 300.0
FIND_UNUSED_ENV = "BAYESDL_DDP_FIND_UNUSED"


def world_size() -> int:
    """Processes in this run: the initialised group's size, else ``WORLD_SIZE`` (1 if unset)."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size()
    return int(os.environ.get("WORLD_SIZE", "1"))


def is_main() -> bool:
    """Whether this process writes outputs (rank 0, or the only process)."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank() == 0
    return int(os.environ.get("RANK", "0")) == 0


def timeout() -> timedelta:
    """How long a collective may wait for a peer (``BAYESDL_DIST_TIMEOUT`` seconds)."""
    raw = os.environ.get(TIMEOUT_ENV, str(DEFAULT_TIMEOUT_S))
    try:
        seconds = float(raw)
    except ValueError:
        raise UserError(f"{TIMEOUT_ENV}={raw!r} is not a number of seconds") from None
    if not seconds > 0:
        raise UserError(f"{TIMEOUT_ENV} must be positive, got {raw}")
    return timedelta(seconds=seconds)


class ELBOModule(torch.nn.Module):
    """``forward(**data) = loss_fn(**data)``, with the trained tensors as ``parameters()``."""

    def __init__(self, params: list[torch.nn.Parameter], loss_fn: Callable[..., torch.Tensor]):
        super().__init__()
        self.trained = torch.nn.ParameterList(params)
        self.loss_fn = loss_fn

    def forward(self, **data: Any) -> torch.Tensor:
        """The differentiable ``-ELBO`` estimate on this process's minibatch."""
        return self.loss_fn(**data)


@dataclass
class DistContext:
    """This process's place in a data-parallel run."""

    rank: int
    world: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        """Rank 0 prints progress and writes metrics, checkpoints, summary and figures."""
        return self.rank == 0

    @property
    def shard(self) -> tuple[int, int]:
        """``(rank, world)`` for :class:`~inference.batching.EpochBatcher`."""
        return self.rank, self.world

    def global_batch(self, batch_size: int | None, data_size: int) -> int:
        """The global minibatch size: ``--batch-size`` (default: all N data, split by rank)."""
        b = data_size if batch_size is None else min(batch_size, data_size)
        if b < self.world:
            raise UserError(
                f"--batch-size {b} is smaller than the {self.world} processes; each needs data"
            )
        return b

    def check_shardable(self, model: Callable, guide: Callable, data: dict[str, Any]) -> None:
        """Refuse a model that never enters ``pyro.plate("data", N)``: there is nothing to split.

        One pass of guide and model without gradients; the RNG state is restored after it, so
        the run draws exactly what a one-process run draws.
        """
        state = torch.get_rng_state()
        cuda_state = torch.cuda.get_rng_state(self.device) if self.device.type == "cuda" else None
        try:
            with torch.no_grad():
                guide_tr = poutine.trace(guide).get_trace(**data)
                model_tr = poutine.trace(poutine.replay(model, trace=guide_tr)).get_trace(**data)
        finally:
            torch.set_rng_state(state)
            if cuda_state is not None:
                torch.cuda.set_rng_state(cuda_state, self.device)
        if "data" not in model_tr.nodes and "data" not in guide_tr.nodes:
            raise UserError(_NO_PLATE)

    def wrap(
        self, params: dict[str, torch.Tensor], loss_fn: Callable[..., torch.Tensor]
    ) -> tuple[dict[str, torch.nn.Parameter], Callable[..., torch.Tensor]]:
        """Make the param store hold ``nn.Parameter`` objects and wrap the loss in DDP.

        Returns the parameters (give *these* to the optimizer) and the DDP-wrapped loss, whose
        backward averages gradients over the processes. DDP also broadcasts rank 0's initial
        values, so every process starts from the same point.
        """
        store = pyro.get_param_store()
        out: dict[str, torch.nn.Parameter] = {}
        for name, t in params.items():
            if not isinstance(t, torch.nn.Parameter):  # a plain pyro.param leaf tensor
                constraint = store._constraints[name]
                p = torch.nn.Parameter(t.detach(), requires_grad=True)  # shares t's storage
                del store[name]
                store.set_state({"params": {name: p}, "constraints": {name: constraint}})
                t = p
            out[name] = t
        module = ELBOModule(list(out.values()), loss_fn)
        # a model whose steps leave some parameters unused (stochastic control flow) needs
        # BAYESDL_DDP_FIND_UNUSED=1: DDP then walks the autograd graph every step
        kwargs: dict[str, Any] = {"find_unused_parameters": os.environ.get(FIND_UNUSED_ENV) == "1"}
        if self.device.type == "cuda":
            kwargs.update(device_ids=[self.device.index], output_device=self.device.index)
        return out, DistributedDataParallel(module, **kwargs)

    def broadcast(self, obj: Any) -> Any:
        """Rank 0's ``obj`` on every process (a checkpoint: only rank 0 reads the file)."""
        box = [obj if self.is_main else None]
        dist.broadcast_object_list(box, src=0, device=self.device)
        state = box[0]
        cuda = state.get("rng", {}).get("cuda") if isinstance(state, dict) else None
        if cuda and self.device.type == "cuda" and self.device.index < len(cuda):
            cuda = list(cuda)  # rank 0 drew on cuda:0; this rank draws on its own GPU
            cuda[self.device.index] = cuda[0]
            state["rng"]["cuda"] = cuda
        return state

    def mean_(self, t: torch.Tensor) -> torch.Tensor:
        """Average ``t`` over the processes, in place (the logged ELBO, once per log window)."""
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
        return t.div_(self.world)


_NO_PLATE = (
    "this model has no data plate to shard: data-parallel training (torchrun with more than "
    'one process) needs a model that puts its likelihood in `with pyro.plate("data", N) as '
    "idx:` and indexes its data by idx; run it as a single process instead"
)


def setup(device: str, data_size: int | None) -> DistContext | None:
    """Join the data-parallel run this process was launched into, or ``None`` if there is none.

    ``torchrun`` sets ``WORLD_SIZE`` > 1: the process group is initialised (NCCL with one GPU
    per local rank when ``device`` asks for CUDA, gloo on CPU), with :func:`timeout` on every
    collective. A group the caller initialised already is used as it is.
    """
    if world_size() <= 1:
        return None
    if data_size is None:
        raise UserError(_NO_PLATE)
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise UserError(f"--device {device} asked for, but this torch sees no CUDA device")
        if local_rank >= torch.cuda.device_count():
            raise UserError(
                f"local rank {local_rank} has no GPU (this machine has "
                f"{torch.cuda.device_count()}): lower --nproc_per_node"
            )
        dev = torch.device("cuda", local_rank)  # one GPU per local rank
        torch.cuda.set_device(dev)
        backend = "nccl"
    elif device == "cpu":
        dev, backend = torch.device("cpu"), "gloo"
    else:
        raise UserError(f"unknown device {device!r}; choose cpu, cuda or auto")
    if not dist.is_initialized():
        for var in ("MASTER_ADDR", "MASTER_PORT", "RANK"):
            if var not in os.environ:
                raise UserError(f"WORLD_SIZE is set but {var} is not: launch with torchrun")
        dist.init_process_group(backend=backend, timeout=timeout())
        atexit.register(_teardown)
    return DistContext(dist.get_rank(), dist.get_world_size(), local_rank, dev)


#: set by :func:`abandon`: a peer died, the group is broken
_abandoned = False


def abandon() -> None:
    """Leave the process group without tearing it down: after a peer's failure, destroying a
    gloo group whose peer is gone can abort the process at exit (``terminate called without
    an active exception``) instead of exiting with the run's own status."""
    global _abandoned
    _abandoned = True


def abandoned() -> bool:
    """Whether :func:`abandon` was called: the process should end without finalizing (the
    broken group's destructor can abort it), ``python -m bayesdl`` ends it by ``os._exit``."""
    return _abandoned


def _teardown() -> None:
    """At exit: wait for every process, then destroy the group together (a process that
    destroys it while a peer's connection threads still run can abort that peer)."""
    if not dist.is_initialized() or _abandoned:
        return
    try:
        dist.barrier()
    except Exception:  # noqa: BLE001 - a peer already gone: nothing left to wait for
        return
    dist.destroy_process_group()


def is_peer_failure(e: BaseException) -> bool:
    """Whether ``e`` is a collective that failed because another process died or timed out."""
    return isinstance(e, dist.DistError) or (
        isinstance(e, RuntimeError)
        and dist.is_initialized()
        and _GLOO_HINTS.search(str(e)) is not None
    )


_GLOO_HINTS = re.compile(r"gloo|Connection closed by peer|Connection reset|Timed out|NCCL", re.I)
