"""What decides a fit: :class:`FitConfig` (every ``bayesdl fit`` engine option, typed, saved
with every checkpoint); its optimizers are named in :mod:`bayesdl.inference.optimizers`."""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from typing import Any

import torch

from bayesdl.inference.convergence import AUTO, steps_or_auto
from bayesdl.inference.devices import check_threads
from bayesdl.inference.errors import UserError
from bayesdl.inference.optimizers import (
    OPTIMIZERS,  # noqa: F401  (imported from here by inference.train)
    canonical_optimizer,
    canonical_scheduler,
    make_optimizer,
    make_scheduler,
)
from bayesdl.inference.schedules import LR_SCHEDULES

#: values of ``--compile`` (see :mod:`bayesdl.inference.compiled`)
COMPILE_MODES = ("false", "true", "auto")
#: the largest seed numpy's RNG (seeded by ``pyro.set_rng_seed``) accepts
MAX_SEED = 2**32 - 1


#: ``field(metadata=INTERNAL)``: not an option (no flag, no keyword, not recorded)
INTERNAL = {"internal": True}


def internal(obj: Any) -> tuple:
    """The fields of dataclass ``obj`` that are not options (``metadata=INTERNAL``)."""
    return tuple(f for f in fields(obj) if f.metadata.get("internal"))


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
        default="adam",
        metadata={
            "help": "adam | adamw | sgd (momentum 0.9) | clipped-adam (Pyro's) | any "
            "torch.optim class by name, e.g. rmsprop, nadam (default %(default)s)"
        },
    )
    optim_args: tuple[str, ...] = field(
        default=(),
        metadata={
            "help": "a keyword of the optimizer, name=JSON value (repeatable): "
            "--optim-arg weight_decay=1e-4 --optim-arg betas=[0.9,0.99]",
            "flag": "--optim-arg",
            "metavar": "NAME=VALUE",
        },
    )
    scheduler: str | None = field(
        default=None,
        metadata={
            "help": "a torch.optim.lr_scheduler class by name (ExponentialLR, StepLR, ...), "
            "stepped after every optimizer step; replaces --lr-schedule",
        },
    )
    scheduler_args: tuple[str, ...] = field(
        default=(),
        metadata={
            "help": "a keyword of the scheduler, name=JSON value (repeatable): "
            "--scheduler-arg gamma=0.999",
            "flag": "--scheduler-arg",
            "metavar": "NAME=VALUE",
        },
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
            "help": "torch intra-op threads (default: 1 for a step of under 100,000 numbers, "
            "parameters and batch, where more threads only spin-wait; else one per CPU, at "
            "most 4)"
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

    # a Python optimizer / scheduler class that has no name (recorded as "python:Class"):
    # held here, never in config.json or a checkpoint
    optim_factory: Any = field(default=None, compare=False, repr=False, metadata=INTERNAL)
    scheduler_factory: Any = field(default=None, compare=False, repr=False, metadata=INTERNAL)

    def __post_init__(self) -> None:
        object.__setattr__(self, "optimizer", canonical_optimizer(self.optimizer))
        object.__setattr__(self, "scheduler", canonical_scheduler(self.scheduler))

    def plain(self) -> dict[str, Any]:
        """The options as plain data (a checkpoint's ``"config"``): the live classes left out."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f not in internal(self)}

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
        self._validate_optimizer()
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

    def _validate_optimizer(self) -> None:
        """The optimizer and scheduler built once on a dummy parameter (bad keywords are a
        one-line error before the fit starts); a scheduler replaces bayesdl's schedule."""
        p = torch.zeros(1, requires_grad=True)
        opt = make_optimizer(self.optimizer, self.optim_args, self.lr, [p], self.optim_factory)
        if self.scheduler is None:
            return
        make_scheduler(self.scheduler, self.scheduler_args, opt, self.scheduler_factory)
        if self.steps == AUTO:
            raise UserError(
                "--scheduler sets the learning rate itself: give --steps N (steps=N), not auto"
            )
        if self.lr_schedule != "constant" or self.lr_warmup:
            raise UserError(
                "--scheduler replaces --lr-schedule and --lr-warmup: leave them out "
                f"(got --lr-schedule {self.lr_schedule}, --lr-warmup {self.lr_warmup})"
            )
