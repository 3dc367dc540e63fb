"""What decides a fit: :class:`FitConfig` (every ``bayesdl fit`` engine option, typed, saved
with every checkpoint) and the optimizers it names."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from bayesdl.inference.convergence import AUTO, steps_or_auto
from bayesdl.inference.devices import check_threads
from bayesdl.inference.errors import UserError
from bayesdl.inference.schedules import LR_SCHEDULES

#: values of ``--compile`` (see :mod:`bayesdl.inference.compiled`)
COMPILE_MODES = ("false", "true", "auto")
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
