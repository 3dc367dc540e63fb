"""Where a fit starts: ``--init NAME`` and ``--init-value SITE=VALUE`` (from Python a dict
and Pyro's own strategies), for the autoguides' locations and NUTS's first point.

Pyro's strategies (:mod:`pyro.infer.autoguide.initialization`) are recorded by name so that a
run folder can rebuild them: ``init_to_median`` -> ``median``, ``init_to_mean``,
``init_to_sample``, ``init_to_feasible``, ``init_to_uniform``; ``init_to_value(values={...},
fallback=...)`` -> ``init_value`` (``"site=JSON"`` strings) and the fallback's name.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Mapping
from typing import Any

import torch
from pyro.infer.autoguide.initialization import (
    init_to_feasible,
    init_to_mean,
    init_to_median,
    init_to_sample,
    init_to_uniform,
    init_to_value,
)

from bayesdl.inference.errors import UserError
from bayesdl.workflows.user_data import parse_kv

__all__ = ["INITS", "autoguide_init", "nuts_init", "python_init_keywords"]

#: ``--init`` names -> Pyro's initialisation strategies
INITS: dict[str, Callable] = {
    "feasible": init_to_feasible,
    "median": init_to_median,
    "mean": init_to_mean,
    "sample": init_to_sample,
    "uniform": init_to_uniform,
}


def _strategy_name(fn: Any) -> str:
    for name, known in INITS.items():
        if fn is known:
            return name
    raise UserError(
        f"init=: unknown initialisation {fn!r}; give a name ({', '.join(INITS)}) or one of "
        "Pyro's init_to_median, init_to_mean, init_to_sample, init_to_feasible, "
        "init_to_uniform, init_to_value(values={...})"
    )


def _from_strategy(fn: Any) -> tuple[str, dict[str, Any]]:
    """``(name, values)`` of a Pyro strategy (a function, or the ``functools.partial`` that
    ``init_to_value(values=...)`` returns)."""
    if not isinstance(fn, functools.partial):
        return _strategy_name(fn), {}
    kw = dict(fn.keywords)
    if fn.args:
        raise UserError(f"init=: {fn!r} has positional arguments; give its keywords")
    if fn.func is init_to_value:
        values = dict(kw.pop("values", {}) or {})
        fallback = kw.pop("fallback", init_to_uniform)
        name = _strategy_name(fallback) if fallback is not None else "feasible"
    else:
        name = _strategy_name(fn.func)
        kw.pop("fallback", None)
    if kw:
        raise UserError(
            f"init=: {fn.func.__name__} with {kw} cannot be recorded in a run folder; "
            "give it without those arguments"
        )
    return name, values


def _value_items(values: Mapping[str, Any]) -> tuple[str, ...]:
    out = []
    for name, v in values.items():
        v = v.detach().cpu().tolist() if torch.is_tensor(v) else v
        try:
            out.append(f"{name}={json.dumps(v, allow_nan=False)}")
        except (TypeError, ValueError):
            raise UserError(f"init_value={{{name!r}: {v!r}}}: not a number or a list") from None
    return tuple(out)


def python_init_keywords(keywords: dict[str, Any]) -> dict[str, Any]:
    """``init_value={"lam": 0.8}`` and ``init=init_to_value(values=...)`` / ``init_to_median``
    from Python as the command line's options (``init="median"``, ``init_value=("lam=0.8",)``)."""
    out = dict(keywords)
    values: dict[str, Any] = {}
    init = out.get("init")
    if init is not None and not isinstance(init, str):
        out["init"], values = _from_strategy(init)
    given = out.get("init_value")
    if isinstance(given, Mapping):
        values = {**values, **given}
    elif given is not None and not isinstance(given, str):
        values = {**values, **parse_kv(given, "--init-value")}
    elif isinstance(given, str):
        raise UserError(f"init_value= takes a dict ({{'site': value}}), got {given!r}")
    if values or "init_value" in out:
        out["init_value"] = _value_items(values)
    return out


def _values(items: tuple[str, ...]) -> dict[str, torch.Tensor]:
    out = {}
    for name, v in parse_kv(items, "--init-value").items():
        try:
            out[name] = torch.as_tensor(v, dtype=torch.get_default_dtype())
        except (TypeError, ValueError):
            raise UserError(f"--init-value {name}: {v!r} is not a number or list") from None
    return out


def autoguide_init(
    init: str | None, init_value: tuple[str, ...], spec: str, auto: bool
) -> dict[str, Any]:
    """The ``init_loc_fn`` keyword of autoguide ``spec`` (``{}``: Pyro's default). ``--guide
    auto`` starts where auto-normal does (the unconstrained origin): a prior's median (Pyro's
    default for the others) lies far out under a wide prior."""
    values = _values(init_value)
    if init is None and not values and not auto:
        return {}
    fallback = (
        INITS[init]
        if init
        else (init_to_feasible if spec == "auto-normal" or auto else init_to_median)
    )  # Pyro's defaults
    if not values:
        return {"init_loc_fn": fallback}
    return {"init_loc_fn": init_to_value(values=values, fallback=fallback)}


def nuts_init(init: str | None, init_value: tuple[str, ...]) -> Callable | None:
    """NUTS's ``init_strategy`` (``None``: Pyro's default, ``init_to_uniform``)."""
    values = _values(init_value)
    if init is None and not values:
        return None
    fallback = INITS[init] if init else init_to_uniform
    return init_to_value(values=values, fallback=fallback) if values else fallback
