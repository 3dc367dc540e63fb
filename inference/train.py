"""Stochastic variational inference: ``max_lambda E_q[log p(x, z) - log q(z | lambda)]``.

One loop for every model, written the way ``examples/svi_torch.py`` in Pyro writes it:
the estimator gives a differentiable loss, a plain :mod:`torch.optim` optimizer steps on
the parameters it touches. What the loop adds over ``SVI.step`` is only bookkeeping that
never waits on the device between log points: minibatch indices, learning-rate and KL
schedules, gradient clipping, metrics, atomic checkpoints, exact resume and clean
SIGINT/SIGTERM handling.
"""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import pyro
import torch
from bayesdl.inference import checkpoint as ckpt
from bayesdl.inference import distributed
from bayesdl.inference.batching import DataSubsample, EpochBatcher
from bayesdl.inference.devices import resolve_device
from bayesdl.inference.errors import UserError
from bayesdl.inference.estimators import make_estimator
from bayesdl.inference.schedules import LR_SCHEDULES, KLScale, kl_weight, lr_factor
from pyro import poutine
from tqdm.auto import tqdm

CHECKPOINT = "checkpoint.pt"
METRICS = "metrics.jsonl"


@dataclass
class FitConfig:
    """Everything that decides a fit; saved with every checkpoint."""

    steps: int = 1000
    lr: float = 1e-2
    optimizer: str = "adam"
    estimator: str = "reparam"
    particles: int = 1
    vectorize_particles: bool = True
    max_plate_nesting: float = float("inf")
    batch_size: int | None = None
    lr_schedule: str = "constant"
    lr_warmup: int = 0
    clip_norm: float | None = None
    kl_warmup: int = 0
    kl_warmup_start: int = 0
    seed: int = 0
    device: str = "cpu"
    log_every: int = 100
    checkpoint_every: int = 1000
    threads: int | None = None
    check_args: bool = False

    def validate(self) -> None:
        """Reject impossible settings with a :class:`UserError`."""
        if self.steps <= 0:
            raise UserError(f"--steps must be positive, got {self.steps}")
        if not self.lr > 0:
            raise UserError(f"--lr must be positive, got {self.lr}")
        if self.particles < 1:
            raise UserError(f"--particles must be >= 1, got {self.particles}")
        if self.batch_size is not None and self.batch_size < 1:
            raise UserError(f"--batch-size must be >= 1, got {self.batch_size}")
        if self.lr_schedule not in LR_SCHEDULES:
            raise UserError(f"--lr-schedule must be one of {', '.join(LR_SCHEDULES)}")
        if self.optimizer not in OPTIMIZERS:
            raise UserError(f"--optimizer must be one of {', '.join(OPTIMIZERS)}")
        if self.clip_norm is not None and not self.clip_norm > 0:
            raise UserError(f"--clip-norm must be positive, got {self.clip_norm}")
        if self.log_every < 1 or self.checkpoint_every < 1:
            raise UserError("--log-every and --checkpoint-every must be >= 1")
        if self.threads is not None and self.threads < 1:
            raise UserError(f"--threads must be >= 1, got {self.threads}")
        if self.kl_warmup < 0:
            raise UserError(f"--kl-warmup must be >= 0, got {self.kl_warmup}")


OPTIMIZERS: dict[str, Callable[..., torch.optim.Optimizer]] = {
    "adam": torch.optim.Adam,
    "adamw": torch.optim.AdamW,
    "sgd": lambda params, lr: torch.optim.SGD(params, lr=lr, momentum=0.9),
}


@dataclass
class FitResult:
    """What a fit produced (the parameters themselves live in Pyro's param store)."""

    steps: int
    final_elbo: float
    wall_seconds: float
    device: str
    history: list[dict] = field(default_factory=list)
    interrupted: bool = False


class Interrupted(Exception):
    """SIGINT or SIGTERM arrived; a checkpoint was saved at ``step``."""

    def __init__(self, step: int, path: Path | None):
        super().__init__(f"interrupted at step {step}")
        self.step, self.path = step, path


class _StopFlag:
    """Turns SIGINT/SIGTERM into a flag the loop reads between steps."""

    def __init__(self) -> None:
        self.raised: int | None = None
        self._old: dict = {}

    def __enter__(self):
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                self._old[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread: leave signals alone
                pass
        return self

    def _handle(self, signum, frame):  # noqa: ARG002
        self.raised = signum

    def __exit__(self, *exc):
        for sig, old in self._old.items():
            signal.signal(sig, old)
        return False


def _to_device(data: Mapping[str, Any], device: torch.device) -> dict[str, Any]:
    return {k: v.to(device) if torch.is_tensor(v) else v for k, v in data.items()}


def trainable_params(
    model, guide, data: Mapping[str, Any], modules: tuple = ()
) -> dict[str, torch.Tensor]:
    """Run model and guide once (no gradients) and return their unconstrained parameters,
    by name, so the optimizer holds the very tensors Pyro's param store holds.

    Parameters of ``modules`` (the model and guide, where they are ``nn.Module`` s, as in
    Pyro's ``ELBOModule``) are trained too, so a network needs no ``pyro.module`` call at
    every step.
    """
    with torch.no_grad(), poutine.trace(param_only=True) as tr:
        guide_tr = poutine.trace(guide).get_trace(**data)
        poutine.replay(model, trace=guide_tr)(**data)
    unconstrained = dict(pyro.get_param_store().named_parameters())
    params = {
        name: unconstrained[name]
        for name in sorted(tr.trace.nodes)
        if tr.trace.nodes[name]["type"] == "param"
    }
    seen = {id(p) for p in params.values()}
    for role, module in zip(("model", "guide"), modules, strict=False):
        if isinstance(module, torch.nn.Module):
            for name, p in module.named_parameters():
                if p.requires_grad and id(p) not in seen:
                    params[f"{role}.{name}"] = p
                    seen.add(id(p))
    return params


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
) -> FitResult:
    """Fit ``guide`` to ``model`` by SVI; ``data`` are the keyword arguments of both.

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
    """
    config.validate()
    device = resolve_device(config.device)
    ddp = distributed.setup(config.device, data_size)  # None unless torchrun started P > 1
    if ddp is not None:
        device = ddp.device  # this local rank's GPU, or the CPU
    out = Path(out_dir) if out_dir is not None else None
    if resume and out is None:
        raise UserError("--resume needs --out DIR holding the checkpoint")
    state = ckpt.load(out / CHECKPOINT) if resume and (ddp is None or ddp.is_main) else None
    if resume and ddp is not None:
        state = ddp.broadcast(state)  # only rank 0 reads the file
    if state is not None and state["step"] >= config.steps:
        raise UserError(
            f"the checkpoint is at step {state['step']}, not before --steps {config.steps}; "
            "raise --steps to train longer"
        )

    if config.threads is not None:
        torch.set_num_threads(config.threads)
    pyro.set_rng_seed(config.seed)
    pyro.clear_param_store()
    data = base_data = _to_device(data, device)
    epoch_rng = None  # RNG state at the start of the current epoch (for data_hook)
    if data_hook is not None:  # epoch 0's data, also for the initialisation pass
        epoch_rng = ckpt.rng_state()
        data = data_hook(0, base_data)
    if isinstance(model, torch.nn.Module):
        model.to(device)
    if isinstance(guide, torch.nn.Module):
        guide.to(device)

    estimator = make_estimator(
        config.estimator, config.particles, config.vectorize_particles, config.max_plate_nesting
    )
    subsample = DataSubsample("data")
    kl = KLScale()

    batcher = None
    if config.batch_size is not None or ddp is not None:
        if data_size is None:
            raise UserError("this model has no data plate to split into minibatches")
        batch_size = config.batch_size
        if ddp is not None:
            batch_size = ddp.global_batch(batch_size, data_size)
        if batch_size < data_size or ddp is not None:  # with P processes: each takes 1/P of it
            batcher = EpochBatcher(data_size, batch_size, device, *(ddp.shard if ddp else (0, 1)))
            subsample.indices = batcher.next()  # indices for the initialisation pass

    def wrap(fn: Callable) -> Callable:
        # only the messengers this fit needs: each one costs time at every sample site
        fn = kl(fn) if config.kl_warmup > 0 else fn
        return subsample(fn) if batcher is not None else fn

    train_model = wrap(estimator.wrap_model(model))
    train_guide = wrap(estimator.wrap_guide(guide))
    params = trainable_params(train_model, train_guide, data, (model, guide))
    if not params:
        raise UserError("nothing to fit: the model and guide have no parameters")
    # lets Pyro settle lazy state (plate nesting, baselines) before any RNG state is saved or
    # restored; with gradients on, as TraceEnum_ELBO refuses a loss it cannot differentiate
    estimator.loss(train_model, train_guide, **data).detach()
    loss_fn = partial(estimator.loss, train_model, train_guide)
    if ddp is not None:  # DistributedDataParallel averages the gradients over the processes
        ddp.check_shardable(train_model, train_guide, data)
        params, loss_fn = ddp.wrap(params, loss_fn)
    optimizer = OPTIMIZERS[config.optimizer](list(params.values()), lr=config.lr)

    start = 0
    history: list[dict] = []
    epoch_len = batcher.batches_per_epoch if batcher is not None else 1
    if state is not None:
        ckpt.load_module_states((model, guide), state.get("modules"))
        ckpt.load_param_store_state(state["param_store"], device)
        optimizer.load_state_dict(state["optimizer"])
        if batcher is not None and state.get("batcher") is not None:
            batcher.load_state_dict(state["batcher"])
        ckpt.set_rng_state(state["rng"])
        start = state["step"]
        history = state.get("history", [])
        if data_hook is not None and start % epoch_len:
            epoch_rng = state["epoch_rng"]  # redraw this epoch's data as it was drawn
            ckpt.set_rng_state(epoch_rng)
            data = data_hook(start // epoch_len, base_data)
            ckpt.set_rng_state(state["rng"])
    elif batcher is not None:
        batcher._pos = batcher.batches_per_epoch  # the first epoch starts at step 0

    if ddp is not None and not ddp.is_main:
        out, progress = None, False  # rank 0 alone shows progress, writes metrics and checkpoints
    metrics_path = out / METRICS if out is not None else None
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        _truncate_metrics(metrics_path, start)

    def save_checkpoint(step: int) -> None:
        if out is None:
            return
        if not all(bool(torch.isfinite(p).all()) for p in param_list):
            raise UserError(
                f"training diverged by step {step}: parameters became NaN or infinite; lower "
                "--lr or set --clip-norm (the last finite checkpoint is kept)"
            )
        ckpt.save(
            out / CHECKPOINT,
            {
                "format": 1,
                "step": step,
                "param_store": ckpt.param_store_state(),
                "modules": ckpt.module_states((model, guide)),
                "optimizer": optimizer.state_dict(),
                "batcher": batcher.state_dict() if batcher is not None else None,
                "rng": ckpt.rng_state(),
                "epoch_rng": epoch_rng,
                "config": asdict(config),
                "history": history,
            },
        )

    param_list = list(params.values())
    set_step = getattr(estimator, "set_step", None)  # optional per-step schedule hook
    running = torch.zeros((), device=device)
    count = 0
    wall0 = time.perf_counter()
    bar = tqdm(
        total=config.steps,
        initial=start,
        disable=None if progress else True,  # None: off when stderr is not a terminal
        desc=f"fit ({config.estimator})",
        unit="step",
        dynamic_ncols=True,
        leave=False,
    )
    interrupted_at = None
    # argument checks ran on the first pass; in the loop they would sync with the device at
    # every distribution (NaN is caught at the next log point instead)
    with _StopFlag() as stop, pyro.validation_enabled(config.check_args):
        for step in range(start, config.steps):
            for group in optimizer.param_groups:
                group["lr"] = config.lr * lr_factor(
                    config.lr_schedule, step, config.steps, config.lr_warmup
                )
            kl.beta = kl_weight(step, config.kl_warmup, config.kl_warmup_start)
            if set_step is not None:  # e.g. the relaxed estimator's temperature
                set_step(step, config.steps)
            if data_hook is not None and step % epoch_len == 0 and step > 0:
                epoch_rng = ckpt.rng_state()
                data = data_hook(step // epoch_len, base_data)
            if batcher is not None:
                subsample.indices = batcher.next()
            try:
                loss = loss_fn(**data)
            except (ValueError, RuntimeError) as e:
                if not all(bool(torch.isfinite(p).all()) for p in param_list):
                    bar.close()
                    raise UserError(
                        f"training diverged before step {step + 1}: parameters became NaN or "
                        "infinite; lower --lr or set --clip-norm "
                        "(the last finite checkpoint is kept)"
                    ) from e
                raise
            loss.backward()
            if config.clip_norm is not None:
                torch.nn.utils.clip_grad_norm_(param_list, config.clip_norm)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            running += loss.detach()
            count += 1

            done = step + 1
            if done % config.log_every == 0 or done == config.steps:
                if ddp is not None:  # the global batch's estimate, as one process logs it
                    ddp.mean_(running)
                elbo = -float(running) / count  # the only host sync: once per log window
                running.zero_()
                count = 0
                if elbo != elbo or abs(elbo) == float("inf"):
                    bar.close()
                    raise UserError(
                        f"the ELBO became {elbo} by step {done}: lower --lr or set --clip-norm "
                        "(the last finite checkpoint is kept)"
                    )
                row = {
                    "step": done,
                    "elbo": elbo,
                    "lr": optimizer.param_groups[0]["lr"],
                    "kl_weight": kl.beta,
                    "wall_seconds": round(time.perf_counter() - wall0, 4),
                }
                history.append(row)
                if metrics_path is not None:
                    with open(metrics_path, "a") as f:
                        f.write(json.dumps(row) + "\n")
                bar.set_postfix(elbo=f"{elbo:.4g}")
            if done % config.checkpoint_every == 0 and done != config.steps:
                save_checkpoint(done)
            bar.update(1)
            if stop.raised is not None or (stop_at_step is not None and done == stop_at_step):
                interrupted_at = done
                break
    bar.close()
    wall = time.perf_counter() - wall0
    final_step = interrupted_at if interrupted_at is not None else config.steps
    save_checkpoint(final_step)
    if interrupted_at is not None:
        raise Interrupted(final_step, out / CHECKPOINT if out is not None else None)
    final = history[-1]["elbo"] if history else float("nan")
    return FitResult(
        steps=config.steps,
        final_elbo=final,
        wall_seconds=wall,
        device=str(device),
        history=history,
    )


def _truncate_metrics(path: Path, step: int) -> None:
    """Keep only metric rows up to ``step`` (a resumed run rewrites what came after)."""
    if not path.exists():
        return
    keep = [
        line for line in path.read_text().splitlines() if line and json.loads(line)["step"] <= step
    ]
    path.write_text("".join(line + "\n" for line in keep))


def restore(
    model: Callable,
    guide: Callable,
    data: Mapping[str, Any],
    checkpoint_path: str | Path,
    device: str = "cpu",
) -> torch.device:
    """Load a checkpoint's parameters for prediction: create the parameters by running model
    and guide once, then overwrite them with the saved values."""
    dev = resolve_device(device)
    state = ckpt.load(checkpoint_path)
    pyro.clear_param_store()
    if isinstance(model, torch.nn.Module):
        model.to(dev)
    if isinstance(guide, torch.nn.Module):
        guide.to(dev)
    trainable_params(model, guide, _to_device(data, dev))
    ckpt.load_module_states((model, guide), state.get("modules"))
    ckpt.load_param_store_state(state["param_store"], dev)
    return dev
