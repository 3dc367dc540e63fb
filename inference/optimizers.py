"""The optimizer and learning-rate scheduler of a fit, named so that a run folder can rebuild
them without running code.

``theta_{t+1} = U(theta_t, g_t; lr_t)``: ``U`` is a ``torch.optim`` optimizer's update (or
Pyro's :class:`~pyro.optim.clipped_adam.ClippedAdam`), ``lr_t`` bayesdl's schedule
(``--lr`` times ``--lr-schedule``'s factor) or, with ``--scheduler``, a
``torch.optim.lr_scheduler`` stepped once after every optimizer step.

Names (:data:`OPTIMIZERS`, case and ``_``/``-`` ignored): bayesdl's ``adam``, ``adamw``,
``sgd`` (momentum 0.9 unless ``momentum`` is given), ``clipped-adam`` (Pyro's), and every
``torch.optim`` class by its name (``rmsprop``, ``adagrad``, ``nadam``, ...; not LBFGS, which
needs a closure, as in Pyro). Keywords are ``name=value`` strings with JSON values
(``--optim-arg betas=[0.9,0.99]``), recorded sorted. From Python, :func:`from_python`
translates what Pyro users pass -- a :class:`pyro.optim.PyroOptim` (``pyro.optim.ClippedAdam
({"lr": 0.01})``), a :class:`~pyro.optim.lr_scheduler.PyroLRScheduler`
(``pyro.optim.ExponentialLR({"optimizer": torch.optim.SGD, "optim_args": {...}, "gamma":
0.99})``), a ``torch.optim`` class with ``optim_args={...}`` -- into those names. A class that
has no name here (your own optimizer) is kept as the live object and recorded as
``python:Class``: a run of it resumes from Python only, given the class again.
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Mapping
from typing import Any

import torch

from bayesdl.inference.errors import UserError

__all__ = [
    "OPTIMIZERS",
    "SCHEDULERS",
    "canonical_optimizer",
    "canonical_scheduler",
    "from_python",
    "keyword_items",
    "make_optimizer",
    "make_scheduler",
    "parse_items",
]

#: the prefix of an optimizer or scheduler recorded by its Python class (not rebuildable)
PYTHON = "python:"


def _torch_optimizers() -> dict[str, tuple[type, dict[str, Any]]]:
    out = {}
    for name, cls in vars(torch.optim).items():
        if (
            isinstance(cls, type)
            and issubclass(cls, torch.optim.Optimizer)
            and cls not in (torch.optim.Optimizer, torch.optim.LBFGS)
        ):
            out[name.lower()] = (cls, {})
    return out


def _clipped_adam() -> type:
    from pyro.optim.clipped_adam import ClippedAdam

    return ClippedAdam


#: name -> (optimizer class, bayesdl's defaults over the class's own)
OPTIMIZERS: dict[str, tuple[Any, dict[str, Any]]] = {
    **_torch_optimizers(),
    "sgd": (torch.optim.SGD, {"momentum": 0.9}),
    "clipped-adam": (_clipped_adam, {}),  # imported when used
}


def _torch_schedulers() -> dict[str, type]:
    base = torch.optim.lr_scheduler.LRScheduler
    return {
        name: cls
        for name, cls in vars(torch.optim.lr_scheduler).items()
        if isinstance(cls, type)
        and issubclass(cls, base)
        and cls not in (base, torch.optim.lr_scheduler.ReduceLROnPlateau)
    }


#: ``torch.optim.lr_scheduler`` classes by name (``ReduceLROnPlateau`` needs a metric, no)
SCHEDULERS: dict[str, type] = _torch_schedulers()


def _key(name: str) -> str:
    return name.strip().lower().replace("_", "-")


def canonical_optimizer(name: str) -> str:
    """The recorded name of optimizer ``name`` (``ClippedAdam`` -> ``clipped-adam``,
    ``RMSprop`` -> ``rmsprop``); an unknown one is a :class:`UserError`."""
    key = _key(name)
    if key.startswith(PYTHON):
        return name
    key = {"clippedadam": "clipped-adam"}.get(key, key)
    if key not in OPTIMIZERS:
        raise UserError(
            f"--optimizer: unknown optimizer {name!r}; known: {', '.join(sorted(OPTIMIZERS))}"
        )
    return key


def canonical_scheduler(name: str | None) -> str | None:
    """The recorded name of scheduler ``name`` (its ``torch.optim.lr_scheduler`` class name,
    any case); an unknown one is a :class:`UserError`."""
    if name is None or name.startswith(PYTHON):
        return name
    by_key = {_key(n): n for n in SCHEDULERS}
    if _key(name) not in by_key:
        why = " (it needs a metric; bayesdl steps schedulers per step)" * (
            _key(name) == "reducelronplateau"
        )
        raise UserError(
            f"--scheduler: unknown scheduler {name!r}{why}; known: {', '.join(sorted(SCHEDULERS))}"
        )
    return by_key[_key(name)]


def parse_items(items: tuple[str, ...] | list[str], flag: str) -> dict[str, Any]:
    """``("betas=[0.9,0.99]", "eps=1e-6")`` -> ``{"betas": [0.9, 0.99], "eps": 1e-6}``: JSON
    values, a bare word as a string."""
    out: dict[str, Any] = {}
    for item in items:
        name, eq, text = str(item).partition("=")
        if not eq or not name.strip().isidentifier():
            raise UserError(f"{flag} takes name=value, got {item!r}")
        try:
            out[name.strip()] = json.loads(text)
        except ValueError:
            out[name.strip()] = text
    return out


def keyword_items(args: Mapping[str, Any], flag: str) -> tuple[str, ...]:
    """``{"eps": 1e-6}`` -> ``("eps=1e-06",)``, sorted: how ``config.json`` records them. A
    value that is not plain data (numbers, strings, booleans, lists of them) is refused."""
    out = []
    for name, value in sorted(args.items()):
        if isinstance(value, tuple):
            value = list(value)
        try:
            text = json.dumps(value, allow_nan=False)
        except (TypeError, ValueError):
            raise UserError(
                f"{flag}: {name}={value!r} is not plain data (a number, string, boolean or "
                "list of them), so a run folder cannot record it"
            ) from None
        out.append(f"{name}={text}")
    return tuple(out)


def _class(name: str, live: Any) -> Any:
    if name.startswith(PYTHON):
        if live is None:
            raise UserError(
                f"this run's optimizer {name} was a Python class, which a run folder does not "
                "hold: give it again from Python (bayesdl.fit(..., optim=<the class>, "
                "resume=True)) or fit with --optimizer NAME"
            )
        return live
    cls, defaults = OPTIMIZERS[name]
    return (cls() if cls is _clipped_adam else cls), defaults


def make_optimizer(
    name: str, items: tuple[str, ...], lr: float, params: list[torch.Tensor], live: Any = None
) -> torch.optim.Optimizer:
    """The optimizer ``name`` over ``params`` with keywords ``items`` and rate ``lr``; bad
    keywords are a one-line :class:`UserError`."""
    found = _class(name, live)
    cls, defaults = found if isinstance(found, tuple) else (found, {})
    kwargs = {**defaults, **parse_items(items, "--optim-arg"), "lr": lr}
    try:
        return cls(params, **kwargs)
    except (TypeError, ValueError) as e:
        raise UserError(f"--optimizer {name} with {kwargs}: {str(e).splitlines()[0]}") from None


def make_scheduler(
    name: str | None, items: tuple[str, ...], optimizer: torch.optim.Optimizer, live: Any = None
) -> Any:
    """The ``torch.optim.lr_scheduler`` ``name`` over ``optimizer`` (``None``: no scheduler)."""
    if name is None:
        return None
    if name.startswith(PYTHON):
        if live is None:
            raise UserError(
                f"this run's scheduler {name} was a Python class, which a run folder does not "
                "hold: give it again from Python (scheduler=<the class>)"
            )
        cls = live
    else:
        cls = SCHEDULERS[name]
    kwargs = parse_items(items, "--scheduler-arg")
    try:
        return cls(optimizer, **kwargs)
    except (TypeError, ValueError, KeyError) as e:
        raise UserError(f"--scheduler {name} with {kwargs}: {str(e).splitlines()[0]}") from None


def _named_class(cls: Any) -> str | None:
    """The name of optimizer class ``cls`` in :data:`OPTIMIZERS` (``None``: not there)."""
    if cls is _clipped_adam():
        return "clipped-adam"
    for name, (known, _) in OPTIMIZERS.items():
        if known is cls:
            return name
    return None


def _class_args(cls: type, args: dict[str, Any], name: str) -> dict[str, Any]:
    """``args`` plus the class's own default of every keyword bayesdl's name changes (a
    ``torch.optim.SGD`` from Python keeps its momentum 0, not ``sgd``'s 0.9)."""
    _, changed = OPTIMIZERS[name]
    params = inspect.signature(cls).parameters
    return {**{k: params[k].default for k in changed if k not in args}, **args}


def from_python(
    optim: Any, optim_args: Mapping[str, Any] | None, scheduler: Any, scheduler_args: Any
) -> dict[str, Any]:
    """The engine options (``optimizer``, ``optim_args``, ``scheduler``, ``scheduler_args``,
    ``lr`` when the optimizer's keywords name it, and the live classes that have no name) of
    what a Pyro user passes as ``optim=`` / ``scheduler=`` (see the module's docstring)."""
    from pyro.optim import PyroOptim
    from pyro.optim.lr_scheduler import PyroLRScheduler

    args = dict(optim_args or {})
    sched_args = dict(scheduler_args or {})
    out: dict[str, Any] = {}
    if isinstance(optim, PyroLRScheduler):
        scheduler, sched_args = optim.pt_scheduler_constructor, {**optim.kwargs, **sched_args}
    if isinstance(optim, PyroOptim):
        if callable(optim.pt_optim_args):
            raise UserError(
                "optim=: per-parameter optim_args (a callable) are not supported; give a dict"
            )
        if optim.pt_clip_args:
            raise UserError(
                "optim=: Pyro's clip_args clip each parameter alone; use clip_norm= (the global "
                "gradient norm) or ClippedAdam's own clip_norm"
            )
        args = {**optim.pt_optim_args, **args}
        optim = optim.pt_optim_constructor
    if isinstance(optim, torch.optim.Optimizer):
        raise UserError(
            "optim=: an optimizer object holds parameters the fit has not made yet; pass its "
            "class and keywords (optim=torch.optim.Adam, optim_args={...}) or a pyro.optim object"
        )
    if isinstance(optim, str):
        out["optimizer"] = canonical_optimizer(optim)
    elif isinstance(optim, type) or callable(optim):
        name = _named_class(optim)
        if name is None:
            out["optimizer"] = PYTHON + getattr(optim, "__qualname__", type(optim).__name__)
            out["optim_factory"] = optim
        else:
            out["optimizer"] = name
            args = _class_args(optim, args, name)
    elif optim is not None:
        raise UserError(
            f"optim=: expected a pyro.optim object, optimizer class or name, got {optim!r}"
        )
    if "lr" in args:
        out["lr"] = float(args.pop("lr"))
    out["optim_args"] = keyword_items(args, "optim_args")
    if scheduler is not None:
        if isinstance(scheduler, str):
            out["scheduler"] = canonical_scheduler(scheduler)
        elif scheduler in SCHEDULERS.values():
            out["scheduler"] = scheduler.__name__
        else:
            out["scheduler"] = PYTHON + getattr(scheduler, "__qualname__", repr(scheduler))
            out["scheduler_factory"] = scheduler
        out["scheduler_args"] = keyword_items(sched_args, "scheduler_args")
    return out
