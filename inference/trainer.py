"""One model and guide being fitted by SVI, piece by piece: the :class:`Trainer` builds the state
(parameters, optimizer, minibatches), takes one step (:meth:`Trainer.update` calls a
:class:`~bayesdl.inference.step.Step`: eager, or compiled with ``--compile``), closes a log
window, writes and reads checkpoints. :func:`bayesdl.inference.train.fit` is the loop over it.

The Trainer owns the schedules (learning rate, KL weight, an estimator's temperature), the
minibatch indices, the data hook, logging, checkpoints and the convergence plan; the step owns
``-ELBO``, its gradient and the optimizer's update.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import torch

import bayesdl.inference.checkpoint as ckpt
from bayesdl.inference.batching import DataSubsample, EpochBatcher
from bayesdl.inference.compiled import CompiledStep, Fallback, unsupported
from bayesdl.inference.config import FitConfig
from bayesdl.inference.convergence import StepPlan
from bayesdl.inference.devices import resolve_device
from bayesdl.inference.errors import UserError
from bayesdl.inference.estimators import make_estimator
from bayesdl.inference.guide_moments import IterateAverage, TailAverage, guide_moments
from bayesdl.inference.optimizers import make_optimizer, make_scheduler
from bayesdl.inference.params import UntrainedCheck, trainable_params
from bayesdl.inference.schedules import KLScale, kl_weight
from bayesdl.inference.step import Diverged, EagerStep, OptimizerFailed, Step, all_finite

__all__ = ["TrainState", "Trainer", "to_device"]


def to_device(data: Mapping[str, Any], device: torch.device) -> dict[str, Any]:
    """``data`` with its tensors on ``device``."""
    return {k: v.to(device) if torch.is_tensor(v) else v for k, v in data.items()}


@dataclass
class TrainState:
    """Everything that changes while fitting: the step, the optimizer and the minibatch
    position, the log window, and this epoch's data (see :class:`Trainer`)."""

    step: int
    data: dict[str, Any]
    epoch_rng: dict | None = None
    history: list[dict] = field(default_factory=list)
    running: torch.Tensor | None = None  # sum of the losses of the current log window
    count: int = 0  # steps in the current log window


class Trainer:
    """SVI for one model and guide, in the shape of NumPyro's ``SVI``: :meth:`init` builds the
    state (parameters, optimizer, minibatches), :meth:`update` takes one step, :meth:`log`
    closes a metrics window, :meth:`checkpoint_state` / :meth:`load` save and restore, and
    :func:`fit` is the short loop over them. Each piece can be called and tested alone.

    The parameters live in the current Pyro param store (:func:`fit` gives each fit its own).
    """

    def __init__(
        self,
        model: Callable,
        guide: Callable,
        config: FitConfig,
        *,
        data_size: int | None = None,
        data_hook: Callable[[int, dict[str, Any]], dict[str, Any]] | None = None,
        ddp: Any = None,
        device: torch.device | None = None,
    ):
        self.model, self.guide, self.config = model, guide, config
        self.data_size, self.data_hook, self.ddp = data_size, data_hook, ddp
        self.device = device if device is not None else resolve_device(config.device)
        self.estimator = make_estimator(
            config.estimator, config.particles, config.vectorize_particles, config.max_plate_nesting
        )
        self.subsample = DataSubsample("data")
        self.kl = KLScale()
        annealed = config.kl_warmup_start + config.kl_warmup if config.kl_warmup > 0 else 0
        self.plan = StepPlan(
            config.steps, config.lr_schedule, config.lr_warmup, config.log_every, annealed
        )
        self.batcher: EpochBatcher | None = None
        self.params: dict[str, torch.Tensor] = {}
        self.optimizer: torch.optim.Optimizer | None = None
        #: a torch.optim.lr_scheduler (``--scheduler``), stepped after every optimizer step
        self.scheduler: Any = None
        self.base_data: dict[str, Any] = {}
        self._set_step = None
        #: ``loss_fn(**data) -> -ELBO`` on the wrapped model and guide (differentiable ELBOs)
        self.loss_fn: Callable[..., torch.Tensor] | None = None
        self.untrained: UntrainedCheck | None = None
        #: the eager step, and the captured one once compiled (:meth:`current_step`)
        self.eager: EagerStep | None = None
        self.compiled: CompiledStep | None = None
        self.average: IterateAverage | None = None
        self.tail: TailAverage | None = None

    # -- setup

    def init(self, data: Mapping[str, Any]) -> TrainState:
        """Move data and networks to the device, run model and guide once to create the
        parameters, build the optimizer; the state of step 0."""
        config, ddp = self.config, self.ddp
        self.base_data = data = to_device(data, self.device)
        state = TrainState(step=0, data=data, running=torch.zeros((), device=self.device))
        if self.data_hook is not None:  # epoch 0's data, also for the initialisation pass
            state.epoch_rng = ckpt.rng_state()
            state.data = self.data_hook(0, self.base_data)
        for m in (self.model, self.guide):
            if isinstance(m, torch.nn.Module):
                m.to(self.device)
        self._make_batcher()
        self.train_model = self._wrap(self.estimator.wrap_model(self.model))
        self.train_guide = self._wrap(self.estimator.wrap_guide(self.guide))
        params = self._create_params(state.data)
        # lets Pyro settle lazy state (plate nesting, baselines) before any RNG state is saved
        # or restored; with gradients on, as TraceEnum_ELBO refuses a loss it cannot
        # differentiate
        differentiable = self.estimator.differentiable
        if ddp is not None and not (self.estimator.capabilities.data_parallel and differentiable):
            raise UserError(
                f"--estimator {config.estimator} computes its own gradients and cannot run "
                "data-parallel"
            )
        if differentiable:
            self.estimator.loss(self.train_model, self.train_guide, **state.data).detach()
            self.loss_fn = partial(self.estimator.loss, self.train_model, self.train_guide)
        if ddp is not None:  # DistributedDataParallel averages the gradients over processes
            ddp.check_shardable(self.train_model, self.train_guide, state.data)
            params, self.loss_fn = ddp.wrap(params, self.loss_fn)
        self.params = params
        # the guide's location and sd per log window, for the convergence test's drift part
        self.average = IterateAverage.for_guide(self.guide, params)
        self.plan.tracked = self.average is not None
        self.plan.names = self.average.names if self.average is not None else None
        self.tail = TailAverage(params) if self.plan.auto else None  # --steps auto's tail
        self.optimizer = make_optimizer(
            config.optimizer,
            config.optim_args,
            config.lr,
            list(params.values()),
            config.optim_factory,
        )
        self.scheduler = make_scheduler(
            config.scheduler, config.scheduler_args, self.optimizer, config.scheduler_factory
        )
        self.untrained = UntrainedCheck(params, self.model)
        own_grads = self.estimator.loss_and_grads  # an ELBO without a differentiable loss
        self.eager = EagerStep(
            params,
            self.optimizer,
            loss_fn=self.loss_fn,
            loss_and_grads=partial(own_grads, self.train_model, self.train_guide)
            if not differentiable
            else None,
            clip_norm=config.clip_norm,
            untrained=self.untrained,
            device=self.device,
        )
        self._set_step = getattr(self.estimator, "set_step", None)  # e.g. a temperature
        if self.batcher is not None:
            self.batcher._pos = self.batcher.batches_per_epoch  # epoch 0 starts at step 0
        return state

    def _create_params(self, data: Mapping[str, Any]) -> dict[str, torch.Tensor]:
        """Run the wrapped model and guide once: the parameters they create, by name (a
        minibatch the model cannot take, or none at all, is the user's error in one line)."""
        try:
            params = trainable_params(
                self.train_model, self.train_guide, data, (self.model, self.guide)
            )
        except (ValueError, RuntimeError, IndexError) as e:
            if self.batcher is None or isinstance(e, UserError):
                raise
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise UserError(
                f"the model fails on a minibatch of {len(self.subsample.indices)} "
                f"(--batch-size): {first}; index the data inside the plate "
                "(with pyro.plate('data', N) as idx: ... obs=y[idx]), or leave --batch-size out"
            ) from None
        if not params:
            raise UserError(
                "nothing to fit: the guide has no parameters (a guide must create them with "
                "pyro.param or be a PyroModule / nn.Module)"
            )
        return params

    def _make_batcher(self) -> None:
        """Minibatches of ``--batch-size`` (and a data-parallel run's shard of each), with the
        first batch's indices set for the initialisation pass; none for full batches."""
        config, ddp = self.config, self.ddp
        if config.batch_size is None and ddp is None:
            return
        if self.data_size is None:
            raise UserError(
                "this model has no data plate to split into minibatches: name it 'data', "
                "with pyro.plate('data', N) as idx: ... obs=y[idx] (or "
                "obs=pyro.subsample(y, event_dim=0)), or leave --batch-size out"
            )
        batch_size = config.batch_size
        if ddp is not None:
            batch_size = ddp.global_batch(batch_size, self.data_size)
        if batch_size < self.data_size or ddp is not None:  # P processes: 1/P each
            shard = ddp.shard if ddp else (0, 1)
            self.batcher = EpochBatcher(self.data_size, batch_size, self.device, *shard)
            self.subsample.indices = self.batcher.next()

    def _wrap(self, fn: Callable) -> Callable:
        # only the messengers this fit needs: each one costs time at every sample site
        fn = self.kl(fn) if self.config.kl_warmup > 0 else fn
        return self.subsample(fn) if self.batcher is not None else fn

    # -- one step

    def update(self, state: TrainState) -> torch.Tensor:
        """One optimizer step at ``state.step`` (schedules, minibatch, data hook); returns the
        detached loss, which stays on the device."""
        config, step = self.config, state.step
        if self.scheduler is None:  # ClippedAdam's lrd decays the rate per step on top
            for group in self.optimizer.param_groups:
                group["lr"] = config.lr * self.plan.lr_factor(step) * group.get("lrd", 1) ** step
        self.kl.beta = kl_weight(step, config.kl_warmup, config.kl_warmup_start)
        if self._set_step is not None:
            self._set_step(step, self.plan.total)
        epoch_len = self.epoch_len
        if self.data_hook is not None and step % epoch_len == 0 and step > 0:
            state.epoch_rng = ckpt.rng_state()
            state.data = self.data_hook(step // epoch_len, self.base_data)
            why = self.compiled.accepts(state.data) if self.compiled is not None else None
            if why is not None:
                print(f"--compile: back to eager steps at step {step}: {why}", file=sys.stderr)
                self.compiled = None
        if self.batcher is not None:
            self.subsample.indices = self.batcher.next()
        try:
            loss = self.current_step(state.data)
        except Diverged as e:
            raise UserError(
                f"training diverged before step {step + 1}: parameters became NaN or "
                "infinite; lower --lr or set --clip-norm (the last finite checkpoint is kept)"
            ) from e.__cause__
        except OptimizerFailed as e:
            raise UserError(
                f"the optimizer's step {step + 1} failed ({e}): lower --lr (now {config.lr:g})"
            ) from e.__cause__
        if self.scheduler is not None:
            self.scheduler.step()
        state.running += loss
        state.count += 1
        state.step += 1
        self._averages(state.step)
        return loss

    @property
    def current_step(self) -> Step:
        """The step :meth:`update` calls: the compiled one while there is one, else eager."""
        return self.compiled if self.compiled is not None else self.eager

    def _averages(self, step: int) -> None:
        """Add the new iterate to the log window's average and, in the tail of ``--steps
        auto``, to the tail's."""
        if self.average is not None:
            self.average.add()
        if self.tail is not None and self.plan.flat_at is not None and step > self.plan.flat_at:
            self.tail.add()

    def compile(self, state: TrainState, backend: str | None = None) -> bool:
        """Capture and compile the step (:mod:`bayesdl.inference.compiled`); when it cannot be,
        say why in one line on stderr and keep stepping eagerly. The RNGs are left as they
        were, so a compiled run draws what its checkpoints say. Returns whether it compiled."""
        config = self.config
        if self.batcher is not None and self.subsample.indices is None:
            self.subsample.indices = self.batcher.next()  # pragma: no cover - set by init
        try:
            why = unsupported(
                self.estimator, data_parallel=self.ddp is not None, check_args=config.check_args
            )
            if why is not None:
                raise Fallback(why)
            self.compiled = CompiledStep(
                self.loss_fn,
                self.params,
                self.optimizer,
                state.data,
                model=self.train_model,
                guide=self.train_guide,
                clip_norm=config.clip_norm,
                kl=self.kl if config.kl_warmup > 0 else None,
                subsample=self.subsample if self.batcher is not None else None,
                untrained=self.untrained,
                device=self.device,
                backend=backend,
                scalars=getattr(self.estimator, "graph_inputs", ()),
            )
        except Fallback as e:
            print(f"--compile: running eagerly: {e}", file=sys.stderr)
            self.compiled = None
        return self.compiled is not None

    def recheck(self, state: TrainState) -> None:
        """At a log point: re-trace the model and guide eagerly; if their structure left the
        captured one, or the graph's loss is not the eager loss on the same noise (checked when
        :meth:`~bayesdl.inference.compiled.CompiledStep.value_check_due`), return to eager
        steps with one line on stderr."""
        if self.compiled is None:
            return
        why = self.compiled.check(state.data)
        if why is None and self.compiled.value_check_due():
            why = self.compiled.check_values(state.data)
        if why is not None:
            print(f"--compile: back to eager steps at step {state.step}: {why}", file=sys.stderr)
            self.compiled = None

    @property
    def epoch_len(self) -> int:
        """Steps per epoch (1 without minibatches)."""
        return self.batcher.batches_per_epoch if self.batcher is not None else 1

    def finite(self) -> bool:
        """Whether every parameter is finite (reads the device)."""
        return all_finite(self.params)

    # -- logging

    def log(self, state: TrainState, wall_seconds: float) -> dict:
        """Close the current log window: the mean ELBO of its steps (the one host sync per
        window); a NaN or infinite ELBO is a :class:`UserError`."""
        if self.ddp is not None:  # the global batch's estimate, as one process logs it
            self.ddp.mean_(state.running)
        elbo = -float(state.running) / max(1, state.count)
        state.running.zero_()
        state.count = 0
        if elbo != elbo or abs(elbo) == float("inf"):
            raise UserError(
                f"the ELBO became {elbo} by step {state.step}: lower --lr or set --clip-norm "
                "(the last finite checkpoint is kept)"
            )
        row = {
            "step": state.step,
            "elbo": elbo,
            "lr": self.optimizer.param_groups[0]["lr"],
            "kl_weight": self.kl.beta,
            "wall_seconds": round(wall_seconds, 4),
        }
        state.history.append(row)
        if self.average is not None:
            loc, sd = self.average.close()
            self.plan.moments.append({"step": state.step, "loc": loc, "sd": sd})
        return row

    # -- checkpoints

    def checkpoint_state(self, state: TrainState) -> dict:
        """Everything :meth:`load` needs to continue exactly as an uninterrupted run."""
        if not self.finite():
            raise UserError(
                f"training diverged by step {state.step}: parameters became NaN or infinite; "
                "lower --lr or set --clip-norm (the last finite checkpoint is kept)"
            )
        return {
            "format": 1,
            "step": state.step,
            "param_store": ckpt.param_store_state(),
            "modules": ckpt.module_states((self.model, self.guide)),
            "optimizer": self.current_step.state_dict(),
            "scheduler": self.scheduler.state_dict() if self.scheduler is not None else None,
            "batcher": self.batcher.state_dict() if self.batcher is not None else None,
            "rng": ckpt.rng_state(),
            "epoch_rng": state.epoch_rng,
            "config": self.config.plain(),
            "history": state.history,
            "window": {"running": state.running.detach().cpu(), "count": state.count},
            "moments": {
                "rows": self.plan.moments,
                "window": self.average.state() if self.average is not None else None,
            },
            "tail": self.tail.state() if self.tail is not None else None,
        }

    def load(self, state: TrainState, saved: dict) -> None:
        """Continue from a checkpoint: parameters, optimizer, minibatch position, RNGs, the
        open log window and this epoch's data."""
        ckpt.load_module_states((self.model, self.guide), saved.get("modules"))
        ckpt.load_param_store_state(saved["param_store"], self.device)
        self.current_step.load_state_dict(saved["optimizer"])
        if self.scheduler is not None:
            if saved.get("scheduler") is None:
                raise UserError("the checkpoint holds no scheduler state to continue from")
            self.scheduler.load_state_dict(saved["scheduler"])
        if self.batcher is not None and saved.get("batcher") is not None:
            self.batcher.load_state_dict(saved["batcher"])
        ckpt.set_rng_state(saved["rng"])
        state.step = saved["step"]
        state.history = list(saved.get("history", []))
        moments = saved.get("moments") or {}
        if self.average is not None:
            rows = list(moments.get("rows") or [])
            dims = {r["loc"].numel() for r in rows} | {r["sd"].numel() for r in rows}
            if rows and dims != {guide_moments(self.average.guide)[0].numel()}:
                raise UserError(
                    "the checkpoint's guide moments are not of this guide's size: the file is "
                    "damaged or was not written for this run"
                )
            self.plan.moments = rows
            self.average.load(moments.get("window"))
        if self.tail is not None:
            self.tail.load(saved.get("tail"))
        self.plan.replay(state.history)
        window = saved.get("window")
        if window is not None:
            state.running = window["running"].to(self.device).clone()
            state.count = int(window["count"])
        if self.data_hook is not None and state.step % self.epoch_len:
            state.epoch_rng = saved["epoch_rng"]  # redraw this epoch's data as it was drawn
            ckpt.set_rng_state(state.epoch_rng)
            state.data = self.data_hook(state.step // self.epoch_len, self.base_data)
            ckpt.set_rng_state(saved["rng"])
