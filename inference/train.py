"""Stochastic variational inference: ``max_lambda E_q[log p(x, z) - log q(z | lambda)]``.

One loop for every model, written the way ``examples/svi_torch.py`` in Pyro writes it:
the estimator gives a differentiable loss (its ELBO's own), a plain :mod:`torch.optim`
optimizer steps on the parameters it touches. The loop has NumPyro's shape: a
:class:`~bayesdl.inference.trainer.Trainer` with ``init`` / ``update`` / ``log`` /
``checkpoint_state``, and :func:`fit` over it. The step itself is a
:class:`~bayesdl.inference.step.Step` built from the loss, the parameters and the optimizer
(eager, or compiled with ``--compile``); what the loop adds over it is only bookkeeping that
never waits on the device between log points: minibatch indices, learning-rate and KL
schedules, metrics, atomic checkpoints, exact resume and clean SIGINT/SIGTERM handling.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pyro
import torch
from tqdm.auto import tqdm

import bayesdl.inference.checkpoint as ckpt
import bayesdl.inference.distributed as distributed
import bayesdl.inference.files as files
from bayesdl.inference.compiled import auto_pays_off
from bayesdl.inference.config import COMPILE_MODES, MAX_SEED, OPTIMIZERS, FitConfig
from bayesdl.inference.convergence import AUTO
from bayesdl.inference.devices import auto_threads, resolve_device
from bayesdl.inference.errors import UserError
from bayesdl.inference.failures import step_failure
from bayesdl.inference.params import trainable_params, untrained_leaves, warn_untrained
from bayesdl.inference.result import FitResult
from bayesdl.inference.serial import one_at_a_time
from bayesdl.inference.signals import Interrupted, StopFlag
from bayesdl.inference.trainer import Trainer, TrainState, to_device

# FitConfig, FitResult, the Trainer and the parameter helpers live in modules of their own;
# they are named here too, where callers have always imported them from
__all__ = [
    "AUTO_PROBE",
    "CHECKPOINT",
    "COMPILE_MODES",
    "MAX_SEED",
    "METRICS",
    "OPTIMIZERS",
    "FitConfig",
    "FitResult",
    "Interrupted",
    "TrainState",
    "Trainer",
    "fit",
    "restore",
    "trainable_params",
    "untrained_leaves",
    "warn_untrained",
]

CHECKPOINT = "checkpoint.pt"
#: eager steps ``--compile auto`` times before deciding
AUTO_PROBE = 5
METRICS = "metrics.jsonl"


@one_at_a_time  # Pyro's handler stack is a process global (inference.serial)
def fit(
    model: Callable,
    guide: Callable,
    data: Mapping[str, Any],
    config: FitConfig,
    out_dir: str | Path | None = None,
    *,
    data_size: int | None = None,
    resume: bool = False,
    progress: bool = True,
    stop_at_step: int | None = None,
    data_hook: Callable[[int, dict[str, Any]], dict[str, Any]] | None = None,
    params: dict | None = None,
) -> FitResult:
    """Fit ``guide`` to ``model`` by SVI; ``data`` are the keyword arguments of both.

    The fit has a parameter store of its own (Pyro's ``param_store.scope``): it neither reads
    nor clears the global one. ``FitResult.params`` holds it afterwards.

    :param data_size: N, the size of the model's ``pyro.plate("data", N)``; needed for
        minibatches (``config.batch_size``).
    :param out_dir: where ``metrics.jsonl`` and ``checkpoint.pt`` go (none when ``None``).
    :param resume: continue from ``out_dir/checkpoint.pt``; the result equals an
        uninterrupted run with the same seed.
    :param stop_at_step: behave as if SIGINT arrived after this step (for tests).
    :param data_hook: ``data_hook(epoch, data) -> data`` gives the data of each epoch (e.g.
        dynamic binarization); called at every epoch start (every step without minibatches)
        with the original ``data``. Its randomness must come from torch's RNGs: the RNG state
        at the epoch start is checkpointed, so a resume mid-epoch redraws the same data.
    :param params: a param store state to start from (default: an empty one).
    """
    config.validate()
    device = resolve_device(config.device)
    ddp = distributed.setup(config.device, data_size)  # None unless torchrun started P > 1
    if ddp is not None:
        device = ddp.device  # this local rank's GPU, or the CPU
    out = Path(out_dir) if out_dir is not None else None
    if resume and out is None:
        raise UserError("--resume needs --out DIR holding the checkpoint")
    main = ddp is None or ddp.is_main
    saved = ckpt.load(out / CHECKPOINT, resume=True) if resume and main else None
    if resume and ddp is not None:
        saved = ddp.broadcast(saved)  # only rank 0 reads the file
    if saved is not None and config.steps != AUTO and saved["step"] > config.steps:
        raise UserError(
            f"the checkpoint is at step {saved['step']}, past --steps {config.steps}; "
            "raise --steps to train longer"
        )
    if config.threads is not None:
        torch.set_num_threads(config.threads)
    previous_threads = torch.get_num_threads()
    pyro.set_rng_seed(config.seed)
    try:
        with pyro.get_param_store().scope(params) as store_state:
            trainer = Trainer(
                model,
                guide,
                config,
                data_size=data_size,
                data_hook=data_hook,
                ddp=ddp,
                device=device,
            )
            state = trainer.init(data)
            threads = config.threads or _auto_threads(trainer, data, data_size)
            torch.set_num_threads(threads)
            if saved is not None:
                trainer.load(state, saved)
            if ddp is not None and not ddp.is_main:
                out, progress = None, False  # rank 0 alone shows progress, writes files
            kept = (saved["step"], out / CHECKPOINT) if saved and out is not None else None
            result = _run(trainer, state, out, progress, stop_at_step, kept)
    finally:
        torch.set_num_threads(previous_threads)  # a fit naming no --threads leaves torch's
    result.params, result.threads = store_state, threads
    return result


def _auto_threads(trainer: Trainer, data: dict[str, Any], data_size: int | None) -> int:
    """:func:`~bayesdl.inference.devices.auto_threads` for this fit's parameters and batch."""
    batch, n = trainer.config.batch_size, data_size
    share = batch / n if batch and n else 1.0
    return auto_threads(trainer.params.values(), data, min(share, 1.0))


def _run(
    trainer: Trainer,
    state: TrainState,
    out: Path | None,
    progress: bool,
    stop_at_step,
    kept: tuple[int, Path] | None = None,
) -> FitResult:
    """The loop: :meth:`Trainer.update` until ``config.steps``, logging every ``log_every``
    and checkpointing every ``checkpoint_every`` steps; SIGINT/SIGTERM save and raise
    :class:`Interrupted` (also while the step is being compiled); an exception of the model or
    guide is one :class:`UserError` (:func:`~bayesdl.inference.failures.step_failure`) that
    names the checkpoint kept (``kept``: that of a resumed run)."""
    config, plan = trainer.config, trainer.plan
    if out is not None:
        try:
            out.mkdir(parents=True, exist_ok=True)
            _truncate_metrics(out / METRICS, state.step)
        except OSError as e:
            raise UserError(f"cannot write {out / METRICS}: {e.strerror or e}") from None
    saved = [kept]  # the step and path of the last checkpoint on disk

    def save(step_state: TrainState) -> None:
        if out is not None:
            ckpt.save(out / CHECKPOINT, trainer.checkpoint_state(step_state))
            saved[0] = (step_state.step, out / CHECKPOINT)

    bar = tqdm(
        total=plan.total,
        initial=state.step,
        disable=None if progress else True,  # None: off when stderr is not a terminal
        desc=f"fit ({config.estimator})",
        unit="step",
        dynamic_ncols=True,
        leave=False,
    )
    # argument checks ran on the first pass; in the loop they would sync with the device at
    # every distribution (NaN is caught at the next log point instead)
    try:
        with StopFlag() as stop, pyro.validation_enabled(config.check_args):
            interrupted = config.compile == "true" and _capture(trainer, state, stop)
            wall0 = time.perf_counter()
            if not interrupted:
                interrupted, rate_t0, rate_step0 = _loop(
                    trainer, state, stop, bar, save, out, stop_at_step, wall0
                )
            if not interrupted and trainer.tail is not None and state.step >= plan.total:
                trainer.tail.apply()  # --steps auto: the mean of the tail's iterates
            _sync(trainer.device)
            now = time.perf_counter()
            save(state)  # under the flag: a signal now does not tear the final checkpoint
    except (UserError, Interrupted):
        raise
    except Exception as e:  # noqa: BLE001 - the user's model and guide may raise anything
        if distributed.is_peer_failure(e):
            raise
        raise step_failure(e, state.step, saved[0], out is not None) from e
    finally:
        bar.close()
    if interrupted:
        raise Interrupted(state.step, out / CHECKPOINT if out is not None else None)
    rate = (state.step - rate_step0) / (now - rate_t0) if state.step > rate_step0 else float("nan")
    history = state.history
    return FitResult(
        steps=state.step,
        final_elbo=history[-1]["elbo"] if history else float("nan"),
        wall_seconds=now - wall0,
        device=str(trainer.device),
        history=history,
        convergence=plan.verdict(history),
        compiled=trainer.compiled is not None,
        compile_seconds=trainer.compiled.compile_seconds if trainer.compiled is not None else 0.0,
        steps_per_second=rate,
    )


def _capture(trainer: Trainer, state: TrainState, stop: StopFlag) -> bool:
    """Compile the step (:meth:`Trainer.compile`); a signal during the capture, which can take
    a minute, stops it at once (the step's state is untouched: the last whole step is saved).
    Returns whether it was interrupted."""
    try:
        with stop.immediate():
            trainer.compile(state)
    except KeyboardInterrupt:
        trainer.compiled = None
        return True
    return False


def _loop(trainer, state, stop, bar, save, out, stop_at_step, wall0) -> tuple[bool, float, int]:
    """:func:`_run`'s steps; returns whether a signal (or ``stop_at_step``) ended them early,
    and the time and step from which steps per second are counted."""
    config, plan = trainer.config, trainer.plan
    # steps per second are counted from the moment the step is compiled (from the start when
    # eager); --compile auto times AUTO_PROBE eager steps first
    rate_t0, rate_step0 = wall0, state.step
    probe_step = state.step + AUTO_PROBE if config.compile == "auto" else None
    while state.step < plan.total:
        if state.step == probe_step:
            probe_step = None
            _sync(trainer.device)
            per_step = (time.perf_counter() - rate_t0) / AUTO_PROBE
            if auto_pays_off(plan.total - state.step, per_step):
                if _capture(trainer, state, stop):
                    return True, rate_t0, rate_step0
                if trainer.compiled is not None:
                    rate_t0, rate_step0 = time.perf_counter(), state.step
        trainer.update(state)
        done = state.step
        if done % config.log_every == 0 or done == plan.total:
            row = trainer.log(state, time.perf_counter() - wall0)
            if out is not None:
                _append_metrics(out / METRICS, row)
            bar.set_postfix(elbo=f"{row['elbo']:.4g}")
            plan.observe(state.history)  # --steps auto: ends the plan once flat
            bar.total = plan.total
            trainer.recheck(state)
        if done % config.checkpoint_every == 0 and done != plan.total:
            save(state)
        bar.update(1)
        if stop.raised is not None or (stop_at_step is not None and done == stop_at_step):
            return done < plan.total, rate_t0, rate_step0
    return False, rate_t0, rate_step0


def _sync(device: torch.device) -> None:
    """Wait for the device (timings)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _append_metrics(path: Path, row: dict) -> None:
    """One row more in ``metrics.jsonl`` (never through a link); a failed write (a read-only
    folder, a full disk) is a :class:`UserError` naming the file."""
    files.append_text(path, json.dumps(row) + "\n")


def _truncate_metrics(path: Path, step: int) -> None:
    """Keep only metric rows up to ``step`` (a resumed run rewrites what came after); a torn
    last line (a kill mid-write) is dropped. The file must be a regular file in the folder
    (not a link, a pipe or a device), within :data:`~bayesdl.inference.files.METRICS_LIMIT`."""
    if files.entry(path, "metrics") is None:
        return
    keep = []
    for line in files.read_lines(path, "metrics"):
        if len(line) > 1 << 16 or not line.startswith("{"):
            continue  # not a row bayesdl writes
        try:
            row = files.parse_json(line, str(path))
        except UserError:
            continue
        if isinstance(row, dict) and isinstance(row.get("step"), int) and row["step"] <= step:
            keep.append(line)
    files.write_text(path, "".join(line + "\n" for line in keep))


@one_at_a_time
def restore(
    model: Callable,
    guide: Callable,
    data: Mapping[str, Any],
    checkpoint_path: str | Path,
    device: str = "cpu",
) -> tuple[torch.device, dict]:
    """Load a checkpoint's parameters for prediction into a param store of their own: create
    the parameters by running model and guide once, then overwrite them with the saved values.
    Returns the device and that store's state (use it with ``param_store.scope(state)``)."""
    dev = resolve_device(device)
    saved = ckpt.load(checkpoint_path)
    if "param_store" not in saved:
        raise UserError(f"checkpoint {checkpoint_path} holds no parameters ('param_store')")
    with pyro.get_param_store().scope() as store_state:
        for m in (model, guide):
            if isinstance(m, torch.nn.Module):
                m.to(dev)
        trainable_params(model, guide, to_device(data, dev))
        ckpt.load_module_states((model, guide), saved.get("modules"))
        ckpt.load_param_store_state(saved["param_store"], dev)
    return dev, store_state
