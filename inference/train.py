"""Stochastic variational inference: ``max_lambda E_q[log p(x, z) - log q(z | lambda)]``.

One loop for every model, written the way ``examples/svi_torch.py`` in Pyro writes it:
the estimator gives a differentiable loss (its ELBO's own), a plain :mod:`torch.optim`
optimizer steps on the parameters it touches. The loop has NumPyro's shape: a
:class:`Trainer` with ``init`` / ``update`` / ``log`` / ``checkpoint_state``, and :func:`fit`.
What the loop adds over ``SVI.step`` is only bookkeeping that never waits on the device
between log points: minibatch indices, learning-rate and KL
schedules, gradient clipping, metrics, atomic checkpoints, exact resume and clean
SIGINT/SIGTERM handling.
"""

from __future__ import annotations

import json
import math
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import pyro
import torch
from pyro import poutine
from tqdm.auto import tqdm

from bayesdl.inference import checkpoint as ckpt
from bayesdl.inference import distributed, files
from bayesdl.inference.batching import DataSubsample, EpochBatcher
from bayesdl.inference.compiled import auto_pays_off
from bayesdl.inference.convergence import AUTO, StepPlan, steps_or_auto
from bayesdl.inference.devices import check_threads, resolve_device
from bayesdl.inference.errors import UserError
from bayesdl.inference.estimators import make_estimator
from bayesdl.inference.failures import step_failure
from bayesdl.inference.guide_moments import IterateAverage, TailAverage, guide_moments
from bayesdl.inference.schedules import LR_SCHEDULES, KLScale, kl_weight
from bayesdl.inference.serial import one_at_a_time
from bayesdl.inference.signals import Interrupted, StopFlag
from bayesdl.inference.where import warn_at

CHECKPOINT = "checkpoint.pt"
#: values of ``--compile`` (see :mod:`bayesdl.inference.compiled`)
COMPILE_MODES = ("false", "true", "auto")
#: eager steps ``--compile auto`` times before deciding
AUTO_PROBE = 5
METRICS = "metrics.jsonl"
#: the largest seed numpy's RNG (seeded by ``pyro.set_rng_seed``) accepts
MAX_SEED = 2**32 - 1


@dataclass(frozen=True)
class FitConfig:
    """Everything that decides a fit; saved with every checkpoint. Frozen: a changed setting
    is a new object (``dataclasses.replace``)."""

    # every field is a `bayesdl fit` option (see bayesdl.workflows.options): `metadata` holds
    # its help ("%(default)s" is the model's default), flag and command-line converter
    steps: int | str = field(
        default=1000,
        metadata={
            "help": "optimizer steps (default %(default)s); auto: until the ELBO flattens, "
            "then a short decay",
            "type": steps_or_auto,
        },
    )
    lr: float = field(default=1e-2, metadata={"help": "learning rate (default %(default)s)"})
    optimizer: str = field(
        default="adam", metadata={"help": "adam | adamw | sgd (default %(default)s)"}
    )
    estimator: str = field(
        default="reparam", metadata={"help": "ELBO gradient estimator (default %(default)s)"}
    )
    particles: int = field(default=1, metadata={"help": "samples per ELBO estimate"})
    vectorize_particles: bool = field(
        default=True,
        metadata={"help": "draw particles in a Python loop (for models that do not broadcast)"},
    )
    max_plate_nesting: float = field(default=float("inf"), metadata={"hidden": True})
    batch_size: int | None = field(
        default=None,
        metadata={
            "help": "minibatch size (likelihood scaled by N / B); default full batch",
            "type": "optional_int",
        },
    )
    lr_schedule: str = field(default="constant", metadata={"help": "constant | linear | cosine"})
    lr_warmup: int = field(default=0, metadata={"help": "steps of linear LR warm-up"})
    clip_norm: float | None = field(default=None, metadata={"help": "clip gradient norm"})
    kl_warmup: int = field(
        default=0, metadata={"help": "anneal the KL weight from 0 to 1 over this many steps"}
    )
    kl_warmup_start: int = field(default=0, metadata={"help": "step at which KL warm-up begins"})
    seed: int = field(
        default=0,
        metadata={"help": "random seed, 0 to 2**32-1 (default %(default)s)", "type": "seed"},
    )
    device: str = field(
        default="cpu", metadata={"help": "cpu | cuda | cuda:N | auto (default %(default)s)"}
    )
    log_every: int = field(default=100, metadata={"help": "steps between metric rows"})
    checkpoint_every: int = field(default=1000, metadata={"help": "steps between checkpoints"})
    threads: int | None = field(
        default=None,
        metadata={
            "help": "torch intra-op threads (default: torch's; 1 is fastest for small models "
            "on a busy machine)"
        },
    )
    # auto: AUTO_PROBE eager steps are timed, then the step is compiled when the remaining
    # steps' eager time exceeds 3x the expected compile cost (inference.compiled.auto_pays_off)
    compile: str = field(
        default="false",
        metadata={
            "help": "trace one whole SVI step (ELBO, gradients, optimizer) once and run it "
            "compiled: false | true | auto (compile when the run is long enough to pay for "
            "it); --compile alone is true (default %(default)s)",
            "type": "compile_mode",
            "const": "true",
            "choices": COMPILE_MODES,
        },
    )
    check_args: bool = field(
        default=False,
        metadata={
            "help": "keep Pyro's argument checks on at every step (slower; for debugging)",
            "flag": "--validate",
        },
    )

    def validate(self) -> None:
        """Reject impossible settings with a :class:`UserError`."""
        if self.steps != AUTO and (
            isinstance(self.steps, bool) or not isinstance(self.steps, int) or self.steps <= 0
        ):
            raise UserError(f"--steps must be positive (or auto), got {self.steps!r}")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise UserError(f"--lr must be a positive finite number, got {self.lr}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise UserError(f"--seed must be an integer, got {self.seed!r}")
        if not 0 <= self.seed <= MAX_SEED:
            raise UserError(f"--seed must be between 0 and 2**32-1, got {self.seed}")
        if self.particles < 1:
            raise UserError(f"--particles must be >= 1, got {self.particles}")
        if self.batch_size is not None and self.batch_size < 1:
            raise UserError(f"--batch-size must be >= 1, got {self.batch_size}")
        if self.lr_schedule not in LR_SCHEDULES:
            raise UserError(f"--lr-schedule must be one of {', '.join(LR_SCHEDULES)}")
        if self.optimizer not in OPTIMIZERS:
            raise UserError(f"--optimizer must be one of {', '.join(OPTIMIZERS)}")
        if self.clip_norm is not None and not (
            self.clip_norm > 0 and math.isfinite(self.clip_norm)
        ):
            raise UserError(
                f"--clip-norm must be a positive finite number, got {self.clip_norm} "
                "(leave it out for no clipping)"
            )
        if isinstance(self.compile, bool):  # compile=True from Python
            object.__setattr__(self, "compile", "true" if self.compile else "false")
        if self.compile not in COMPILE_MODES:
            raise UserError(f"--compile must be one of {', '.join(COMPILE_MODES)}")
        if self.log_every < 1 or self.checkpoint_every < 1:
            raise UserError("--log-every and --checkpoint-every must be >= 1")
        if self.threads is not None:
            check_threads(self.threads)
        for name in ("lr_warmup", "kl_warmup", "kl_warmup_start"):
            if getattr(self, name) < 0:
                flag = "--" + name.replace("_", "-")
                raise UserError(f"{flag} must be >= 0, got {getattr(self, name)}")


OPTIMIZERS: dict[str, Callable[..., torch.optim.Optimizer]] = {
    "adam": torch.optim.Adam,
    "adamw": torch.optim.AdamW,
    "sgd": lambda params, lr: torch.optim.SGD(params, lr=lr, momentum=0.9),
}


@dataclass
class FitResult:
    """What a fit produced.

    ``params`` is the fit's own parameter store (``{"params", "constraints"}``, Pyro's
    ``ParamStoreDict`` state): use the guide inside ``pyro.get_param_store().scope(params)``.
    """

    steps: int
    final_elbo: float
    wall_seconds: float
    device: str
    history: list[dict] = field(default_factory=list)
    interrupted: bool = False
    params: dict = field(default_factory=lambda: {"params": {}, "constraints": {}})
    #: the ELBO test's verdict (:meth:`inference.convergence.StepPlan.verdict`)
    convergence: dict = field(default_factory=dict)
    #: whether the steps ran as a compiled graph (``--compile``), and what capture cost
    compiled: bool = False
    compile_seconds: float = 0.0
    #: steps per second of the loop after compilation (of the whole loop when eager)
    steps_per_second: float = float("nan")

    def param(self, name: str) -> torch.Tensor:
        """The fitted value of ``pyro.param(name)`` (constrained), from this fit's store."""
        with pyro.get_param_store().scope(self.params):
            return pyro.param(name).detach()

    def param_values(self) -> dict[str, torch.Tensor]:
        """Every fitted ``pyro.param`` of this fit (constrained), by name."""
        with pyro.get_param_store().scope(self.params):
            store = pyro.get_param_store()
            return {name: store[name].detach() for name in list(store.keys())}


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


def untrained_leaves(loss: torch.Tensor, params: Mapping[str, torch.Tensor]) -> list[torch.Tensor]:
    """Leaf tensors that require grad and feed ``loss`` but are not among ``params``: weights
    the optimizer never moves (a network called in the model without ``pyro.module``)."""
    known = {id(p) for p in params.values()}
    found, seen, stack = [], set(), [loss.grad_fn]
    while stack:
        node = stack.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        leaf = getattr(node, "variable", None)  # AccumulateGrad: a leaf that gets a .grad
        if leaf is not None and id(leaf) not in known:
            found.append(leaf)
        stack.extend(n for n, _ in node.next_functions)
    return found


def warn_untrained(
    loss: torch.Tensor, params: Mapping[str, torch.Tensor], model: Callable | None = None
) -> None:
    """One :class:`UserWarning` per fit naming the shapes of :func:`untrained_leaves`, shown
    at the ``def`` of ``model``."""
    leaves = untrained_leaves(loss, params)
    if leaves:
        shapes = ", ".join(str(tuple(t.shape)) for t in leaves[:6])
        more = f" and {len(leaves) - 6} more" if len(leaves) > 6 else ""
        warn_at(
            f"{len(leaves)} tensor(s) of shape {shapes}{more} require grad and feed the ELBO but "
            "are not trained: register the network in the model with pyro.module('name', net) "
            "(or make it a PyroModule), or detach the tensor",
            UserWarning,
            model,
        )


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
        self.base_data: dict[str, Any] = {}
        self._set_step = None
        self._checked = False
        #: the captured step (:class:`~bayesdl.inference.compiled.CompiledStep`) once compiled
        self.compiled = None
        self.average: IterateAverage | None = None
        self.tail: TailAverage | None = None

    # -- setup

    def init(self, data: Mapping[str, Any]) -> TrainState:
        """Move data and networks to the device, run model and guide once to create the
        parameters, build the optimizer; the state of step 0."""
        config, ddp = self.config, self.ddp
        self.base_data = data = _to_device(data, self.device)
        state = TrainState(step=0, data=data, running=torch.zeros((), device=self.device))
        if self.data_hook is not None:  # epoch 0's data, also for the initialisation pass
            state.epoch_rng = ckpt.rng_state()
            state.data = self.data_hook(0, self.base_data)
        for m in (self.model, self.guide):
            if isinstance(m, torch.nn.Module):
                m.to(self.device)
        if config.batch_size is not None or ddp is not None:
            if self.data_size is None:
                raise UserError("this model has no data plate to split into minibatches")
            batch_size = config.batch_size
            if ddp is not None:
                batch_size = ddp.global_batch(batch_size, self.data_size)
            if batch_size < self.data_size or ddp is not None:  # P processes: 1/P each
                shard = ddp.shard if ddp else (0, 1)
                self.batcher = EpochBatcher(self.data_size, batch_size, self.device, *shard)
                self.subsample.indices = self.batcher.next()  # for the initialisation pass

        self.train_model = self._wrap(self.estimator.wrap_model(self.model))
        self.train_guide = self._wrap(self.estimator.wrap_guide(self.guide))
        try:
            params = trainable_params(
                self.train_model, self.train_guide, state.data, (self.model, self.guide)
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
        # lets Pyro settle lazy state (plate nesting, baselines) before any RNG state is saved
        # or restored; with gradients on, as TraceEnum_ELBO refuses a loss it cannot
        # differentiate
        if self.estimator.differentiable:
            self.estimator.loss(self.train_model, self.train_guide, **state.data).detach()
            self.loss_fn = partial(self.estimator.loss, self.train_model, self.train_guide)
        elif ddp is not None:
            raise UserError(
                f"--estimator {config.estimator} computes its own gradients and cannot run "
                "data-parallel"
            )
        if ddp is not None:  # DistributedDataParallel averages the gradients over processes
            ddp.check_shardable(self.train_model, self.train_guide, state.data)
            params, self.loss_fn = ddp.wrap(params, self.loss_fn)
        self.params = params
        # the guide's location and sd per log window, for the convergence test's drift part
        self.average = IterateAverage.for_guide(self.guide, params)
        self.plan.tracked = self.average is not None
        self.plan.names = self.average.names if self.average is not None else None
        self.tail = TailAverage(params) if self.plan.auto else None  # --steps auto's tail
        self.optimizer = OPTIMIZERS[config.optimizer](list(params.values()), lr=config.lr)
        self._set_step = getattr(self.estimator, "set_step", None)  # e.g. a temperature
        if self.batcher is not None:
            self.batcher._pos = self.batcher.batches_per_epoch  # epoch 0 starts at step 0
        return state

    def _wrap(self, fn: Callable) -> Callable:
        # only the messengers this fit needs: each one costs time at every sample site
        fn = self.kl(fn) if self.config.kl_warmup > 0 else fn
        return self.subsample(fn) if self.batcher is not None else fn

    # -- one step

    def update(self, state: TrainState) -> torch.Tensor:
        """One optimizer step at ``state.step`` (schedules, minibatch, data hook); returns the
        detached loss, which stays on the device."""
        config, step = self.config, state.step
        for group in self.optimizer.param_groups:
            group["lr"] = config.lr * self.plan.lr_factor(step)
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
        if self.compiled is not None:
            lr = config.lr * self.plan.lr_factor(step)
            loss = self.compiled.step(state.data, lr, self.kl.beta)
            state.running += loss
            state.count += 1
            state.step += 1
            self._averages(state.step)
            return loss
        try:
            if self.estimator.differentiable:
                loss = self.loss_fn(**state.data)
                if not self._checked:  # once per fit: networks the optimizer cannot see
                    warn_untrained(loss, self.params, self.model)
                    self._checked = True
                loss.backward()
                loss = loss.detach()
            else:
                loss = self.estimator.loss_and_grads(
                    self.train_model, self.train_guide, **state.data
                ).to(self.device)
        except (ValueError, RuntimeError) as e:
            if not self.finite():
                raise UserError(
                    f"training diverged before step {step + 1}: parameters became NaN or "
                    "infinite; lower --lr or set --clip-norm (the last finite checkpoint is kept)"
                ) from e
            raise
        if config.clip_norm is not None:
            torch.nn.utils.clip_grad_norm_(list(self.params.values()), config.clip_norm)
        try:
            self.optimizer.step()
        except RuntimeError as e:  # e.g. a step size beyond float32 ("without overflow")
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise UserError(
                f"the optimizer's step {step + 1} failed ({first}): lower --lr (now {config.lr:g})"
            ) from e
        self.optimizer.zero_grad(set_to_none=True)
        state.running += loss
        state.count += 1
        state.step += 1
        self._averages(state.step)
        return loss

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
        from bayesdl.inference.compiled import CompiledStep, Fallback

        if self.batcher is not None and self.subsample.indices is None:
            self.subsample.indices = self.batcher.next()  # pragma: no cover - set by init
        try:
            self.compiled = CompiledStep(self, state.data, backend=backend)
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
        return all(bool(torch.isfinite(p).all()) for p in self.params.values())

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
            "optimizer": self.optimizer.state_dict(),
            "batcher": self.batcher.state_dict() if self.batcher is not None else None,
            "rng": ckpt.rng_state(),
            "epoch_rng": state.epoch_rng,
            "config": asdict(self.config),
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
        ckpt.load_optimizer_state(self.optimizer, saved["optimizer"])
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
    pyro.set_rng_seed(config.seed)
    with pyro.get_param_store().scope(params) as store_state:
        trainer = Trainer(
            model, guide, config, data_size=data_size, data_hook=data_hook, ddp=ddp, device=device
        )
        state = trainer.init(data)
        if saved is not None:
            trainer.load(state, saved)
        if ddp is not None and not ddp.is_main:
            out, progress = None, False  # rank 0 alone shows progress, writes files
        kept = (saved["step"], out / CHECKPOINT) if saved is not None and out is not None else None
        result = _run(trainer, state, out, progress, stop_at_step, kept)
    result.params = store_state
    return result


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
        trainable_params(model, guide, _to_device(data, dev))
        ckpt.load_module_states((model, guide), saved.get("modules"))
        ckpt.load_param_store_state(saved["param_store"], dev)
    return dev, store_state
