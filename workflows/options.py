"""Options are data: each model's options, and the engine's (:class:`FitConfig`), are a
dataclass; the command line's flags (:func:`fit_parser`) and the Python keywords are both
derived from it, so the two cannot drift apart (the typed objects a fit receives are built in
:mod:`bayesdl.workflows.fit_options`).

One field is one flag:

* name ``prior_a`` -> ``--prior-a``;
* ``int``, ``float``, ``str`` and ``X | None`` -> an option taking one value of that type;
* ``bool`` -> a switch: ``--name`` (``store_true``) when the default is False, ``--no-name``
  (``store_false``) when it is True;
* ``tuple[str, ...]`` (``default=()``; or ``list[str]``) -> a repeatable option
  (``action="append"``); the options object holds a tuple.

``field(metadata=...)`` adds: ``help``; ``metavar``; ``choices``; ``flag`` (another flag
name); ``hidden`` (accepted, but not listed by ``--help``); ``const``, the value of the flag given
alone (``--compile`` means ``--compile true``; ``True``/``False`` keywords become words);
``type``, a converter of the
command-line string (a callable, or the name of one in :data:`CONVERTERS`), used for Python
keywords given as strings too. Help texts may say ``%(default)s``: the model's own default.
"""

from __future__ import annotations

import argparse
import numbers
import os
import types
import typing
from collections.abc import Callable, Iterable
from dataclasses import MISSING, Field, dataclass, field, fields, is_dataclass
from typing import Any

import numpy as np

from bayesdl.inference.errors import UserError
from bayesdl.inference.mcmc import MCMCConfig
from bayesdl.inference.train import MAX_SEED, FitConfig
from bayesdl.workflows.paths import absolute_path, absolute_spec

__all__ = [
    "CONVERTERS",
    "Parser",
    "add_options",
    "defaults",
    "engine_defaults",
    "fit_parser",
    "flags",
    "option_specs",
    "optional_int",
    "saved_value_error",
]


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line on stderr and exit status 2."""

    def error(self, message: str):  # noqa: D102
        raise UserError(f"{message} (see {self.prog} --help)")


def optional_int(s: str) -> int | None:
    """``--batch-size``: an int, or ``none``/``full``/``0`` for None."""
    return None if s.lower() in ("none", "full", "0") else int(s)


class _BadValue(argparse.ArgumentTypeError, ValueError):
    """A converter's refusal: argparse prints its message, a Python keyword's check its own."""


def seed(s: str) -> int:
    """``--seed``: an integer from 0 to 2**32-1 (numpy's RNG takes no other)."""
    try:
        value = int(s)
    except ValueError:
        raise _BadValue(f"invalid seed {s!r}: an integer from 0 to 2**32-1") from None
    if not 0 <= value <= MAX_SEED:
        raise _BadValue(f"seed {s} out of range: an integer from 0 to 2**32-1")
    return value


def compile_mode(s: str) -> str:
    """``--compile``: false | true | auto (also yes/no, on/off, 1/0)."""
    word = {"yes": "true", "on": "true", "1": "true", "no": "false", "off": "false", "0": "false"}
    value = word.get(s.lower(), s.lower())
    if value not in ("false", "true", "auto"):
        raise _BadValue(f"invalid value {s!r}: false, true or auto")
    return value


#: converters that ``field(metadata={"type": NAME})`` can name (modules that cannot import
#: this one, such as :mod:`bayesdl.inference.train`)
CONVERTERS: dict[str, Callable[[str], Any]] = {
    "code": absolute_spec,
    "compile_mode": compile_mode,
    "optional_int": optional_int,
    "path": absolute_path,
    "seed": seed,
}


# ------------------------------------------------------------------------------ fields


@dataclass(frozen=True)
class _Spec:
    """One option: what argparse needs and what :func:`namespace` checks keywords against."""

    name: str
    flag: str
    kind: type  # bool, int, float, str or list (of str)
    optional: bool  # None is a value
    default: Any
    convert: Callable[[str], Any] | None  # a custom converter of strings
    choices: tuple | None
    help: str | None
    metavar: str | None
    hidden: bool
    flag_off: bool = False  # a bool switch that sets False (``--no-NAME``)
    const: Any = None  # the value of the bare flag (``--compile`` = ``--compile true``)


def _unwrap(hint: Any, where: str) -> tuple[type, bool]:
    """``(kind, optional)`` of an annotation: ``int | None`` -> ``(int, True)``."""
    optional = False
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        args = typing.get_args(hint)
        rest = [a for a in args if a is not type(None)]
        optional = len(rest) < len(args)
        if rest == [int, str]:  # a number or a word its converter reads (--steps auto)
            rest = [int]
        if len(rest) != 1:
            raise TypeError(f"{where}: option type {hint!r} is not supported")
        hint = rest[0]
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if (origin is list and args in ((str,), ())) or (origin is tuple and args == (str, ...)):
        return list, optional  # a sequence of strings (held as a tuple by the options object)
    if hint in (bool, int, float, str):
        return hint, optional
    raise TypeError(f"{where}: option type {hint!r} is not supported")


def _default(f: Field) -> Any:
    if f.default is not MISSING:
        return f.default
    if f.default_factory is not MISSING:
        return f.default_factory()
    raise TypeError(f"option {f.name!r} needs a default")


def _specs(
    cls: type,
    values: dict[str, Any] | None = None,
    overrides: dict[str, dict[str, Any]] | None = None,
) -> list[_Spec]:
    """The options of dataclass ``cls``; ``values`` replace defaults, ``overrides`` metadata."""
    if not (isinstance(cls, type) and is_dataclass(cls)):
        raise TypeError(f"options must be a dataclass, got {cls!r}")
    hints = typing.get_type_hints(cls)
    values, overrides = values or {}, overrides or {}
    unknown = (set(values) | set(overrides)) - {f.name for f in fields(cls)}
    if unknown:
        raise TypeError(f"{cls.__name__} has no options {', '.join(sorted(unknown))}")
    out = []
    for f in fields(cls):
        if f.metadata.get("internal"):  # not an option (FitConfig's live optimizer class)
            continue
        meta = {**f.metadata, **overrides.get(f.name, {})}
        kind, optional = _unwrap(hints[f.name], f"{cls.__name__}.{f.name}")
        default = values[f.name] if f.name in values else _default(f)
        # a switch turns the *field's* default around, whatever a model's own default
        switch_off = kind is bool and bool(_default(f))
        flag = meta.get("flag") or "--" + "no-" * switch_off + f.name.replace("_", "-")
        convert = meta.get("type")
        convert = CONVERTERS[convert] if isinstance(convert, str) else convert
        choices = meta.get("choices")
        out.append(
            _Spec(
                name=f.name,
                flag=flag,
                kind=kind,
                optional=optional,
                default=default,
                convert=convert,
                choices=None if choices is None else tuple(choices),
                help=meta.get("help"),
                metavar=meta.get("metavar"),
                hidden=bool(meta.get("hidden")),
                flag_off=switch_off,
                const=meta.get("const"),
            )
        )
    return out


def defaults(cls: type) -> dict[str, Any]:
    """``{name: default}`` of an options dataclass (fresh lists for ``default_factory``)."""
    return {s.name: s.default for s in _specs(cls)}


def flags(cls: type) -> dict[str, str]:
    """``{name: flag}`` of an options dataclass: ``prior_a`` -> ``--prior-a``."""
    return {s.name: s.flag for s in _specs(cls)}


def add_options(
    parser: argparse.ArgumentParser | argparse._ArgumentGroup,
    cls: type,
    values: dict[str, Any] | None = None,
    overrides: dict[str, dict[str, Any]] | None = None,
    first: Iterable[str] = (),
) -> None:
    """Add one argument per field of dataclass ``cls`` to ``parser`` (or an argument group).

    ``values`` replace field defaults (a model's engine defaults); ``overrides`` replace
    metadata entries per field (``{"data": {"help": ...}}``); ``first`` names the fields
    that ``--help`` lists first (the rest follow in field order).
    """
    specs = _specs(cls, values, overrides)
    rank = {name: i for i, name in enumerate(first)}
    for s in sorted(specs, key=lambda s: rank.get(s.name, len(rank))):
        kw: dict[str, Any] = {
            "dest": s.name,
            "default": s.default,
            "help": argparse.SUPPRESS if s.hidden else s.help,
        }
        if s.kind is bool:
            kw["action"] = "store_false" if s.flag_off else "store_true"
        else:
            if s.kind is list:
                kw["action"] = "append"
                kw["default"] = list(s.default or [])
            if s.convert or s.kind in (int, float):
                kw["type"] = s.convert or s.kind
            if s.choices is not None:
                kw["choices"] = s.choices
            if s.metavar is not None:
                kw["metavar"] = s.metavar
            if s.const is not None:
                kw["nargs"], kw["const"] = "?", s.const
        parser.add_argument(s.flag, **kw)


# ------------------------------------------------------------------------------ fit options


@dataclass
class _Guide:
    guide: str = field(default="", metadata={"help": "variational family"})


@dataclass
class _Plugin:
    plugin: tuple[str, ...] = field(
        default=(),
        metadata={
            "help": "Python file whose @register models to load (repeatable)",
            "metavar": "FILE",
            "type": "path",
        },
    )


def engine_defaults(workflow: type) -> dict[str, Any]:
    """:class:`FitConfig`'s defaults with the model's own (``fit_defaults``, estimator)."""
    d = defaults(FitConfig)
    d.update(workflow.fit_defaults)
    d["estimator"] = workflow.fit_defaults.get("estimator", workflow.default_estimator)
    return d


def _engine_overrides() -> dict[str, dict[str, Any]]:
    from bayesdl.inference.estimators import ESTIMATORS

    return {"estimator": {"choices": sorted(ESTIMATORS)}}


def _guide_help(workflow: type) -> dict[str, dict[str, Any]]:
    families = ", ".join(workflow.guides) or "see model"
    return {"guide": {"help": f"variational family: {families} (default %(default)s)"}}


def fit_parser(workflow: type, prog: str) -> Parser:
    """The options of ``fit MODEL``: the model's, the engine's (with the model's defaults),
    ``--guide``, ``--estimator`` and ``--plugin``."""
    p = Parser(prog=prog, description=workflow.description)
    workflow.add_arguments(p)
    g = p.add_argument_group("inference")
    add_options(g, _Guide, {"guide": workflow.default_guide}, _guide_help(workflow))
    add_options(g, FitConfig, engine_defaults(workflow), _engine_overrides(), ["estimator"])
    if workflow.nuts:  # --inference nuts --samples --warmup --chains ...
        add_options(p.add_argument_group("sampling"), MCMCConfig)
    add_options(p, _Plugin)
    return p


def common_fit_parser(prog: str, models: str) -> Parser:
    """``bayesdl fit --help`` without a model: the options every model takes (the guide, the
    engine's, the sampler's) at the engine's defaults; a model's own list its ``--help``."""
    p = Parser(
        prog=prog,
        description=f"fit MODEL: a named model ({models}) or FILE.py:function. The options "
        "below are every model's; `bayesdl fit MODEL --help` lists the model's own (its data, "
        "priors, guides) and its defaults.",
    )
    g = p.add_argument_group("inference")
    add_options(g, _Guide, None, {"guide": {"help": "variational family (see the model's help)"}})
    add_options(g, FitConfig, None, _engine_overrides(), ["estimator"])
    add_options(p.add_argument_group("sampling (models NUTS can sample)"), MCMCConfig)
    add_options(p, _Plugin)
    return p


# ------------------------------------------------------------------------------ keywords


def _kind_name(s: _Spec) -> str:
    name = {
        bool: "True or False",
        int: "an integer",
        float: "a number",
        str: "a string",
        list: "a list of strings",
    }[s.kind]
    return f"{name} or None" if s.optional else name


def _from_string(s: _Spec, value: str, bad: Callable[[str], UserError]) -> Any:
    convert = s.convert or (s.kind if s.kind in (int, float) else None)
    if convert is None:
        return value
    try:
        return convert(value)
    except _BadValue as e:
        raise bad(str(e)) from None
    except (TypeError, ValueError):
        raise bad(f"invalid value {value!r}") from None


def _convert(s: _Spec, value: Any, model: str) -> Any:
    """A Python keyword's value, checked and converted as the command line would."""

    def bad(why: str) -> UserError:
        return UserError(
            f"option {s.name!r} ({s.flag}) of model {model!r} takes {_kind_name(s)}: {why}"
        )

    if value is None:
        if s.optional:
            return None
        raise bad("got None")
    if isinstance(value, os.PathLike):
        value = os.fspath(value)
    if s.kind is bool:
        if not isinstance(value, (bool, np.bool_)):
            raise bad(f"got {value!r}")
        return bool(value)
    if s.kind is list:
        if isinstance(value, str) or not isinstance(value, Iterable):
            raise bad(f"got {value!r}")
        items = [os.fspath(v) if isinstance(v, os.PathLike) else v for v in value]
        if not all(isinstance(v, str) for v in items):
            raise bad(f"got {value!r}")
        return tuple(s.convert(v) if s.convert else v for v in items)
    if isinstance(value, bool) and s.const is not None and s.convert:  # compile=True
        value = str(value).lower()
    if isinstance(value, str):
        out = _from_string(s, value, bad)
    elif isinstance(value, bool) or s.kind is str:
        raise bad(f"got {value!r}")
    elif s.kind is int:
        if isinstance(value, numbers.Integral):
            out = int(value)
        elif isinstance(value, numbers.Real) and float(value).is_integer():
            out = int(value)
        else:
            raise bad(f"got {value!r}")
        if s.convert:  # e.g. --batch-size 0 means the full batch
            out = _from_string(s, str(out), bad)
    elif s.kind is float:
        if not isinstance(value, numbers.Real):
            raise bad(f"got {value!r}")
        out = float(value)
        if s.convert:
            out = _from_string(s, repr(out), bad)
    else:  # pragma: no cover - _unwrap admits no other kind
        raise bad(f"got {value!r}")
    if s.choices is not None and out not in s.choices:
        raise UserError(
            f"option {s.name!r} ({s.flag}) of model {model!r} must be one of "
            f"{', '.join(map(str, s.choices))}, got {out!r}"
        )
    return out


def option_specs(workflow: type) -> dict[str, _Spec]:
    """Every option of ``fit MODEL`` declared by a dataclass (the guide, the engine's, the
    sampler's, ``--plugin``, the model's own), by name."""
    specs = {s.name: s for s in _specs(_Guide) + _specs(FitConfig, None, _engine_overrides())}
    specs.update({s.name: s for s in _specs(_Plugin)})
    if workflow.nuts:
        specs.update({s.name: s for s in _specs(MCMCConfig)})
    if getattr(workflow, "options", None) is not None:
        specs.update({s.name: s for s in _specs(workflow.options)})
    return specs


def saved_value_error(s: _Spec, value: Any) -> str | None:
    """Why ``value``, read from a run's ``config.json``, is not a value of option ``s`` (its
    type, choices, converter), or ``None``. Strings are not converted (paths stay as saved)."""
    if value is None:
        return None if s.optional else "None"
    if s.kind is bool:
        ok = isinstance(value, bool)
    elif s.kind is list:
        ok = isinstance(value, list | tuple) and all(isinstance(v, str) for v in value)
    elif s.kind is str:
        ok = isinstance(value, str)
    elif isinstance(value, bool):
        ok = False
    elif isinstance(value, str):  # --steps auto; floats saved as "inf"
        ok = s.kind is float and value in ("inf", "-inf")
        if not ok and s.convert is not None:  # a word the converter keeps as it is
            try:
                ok = s.convert(value) == value
            except (TypeError, ValueError, argparse.ArgumentTypeError):
                ok = False
    else:
        ok = isinstance(value, int) if s.kind is int else isinstance(value, int | float)
    if not ok:
        return f"{value!r}, not {_kind_name(s)}"
    if s.choices is not None and value not in s.choices:
        return f"{value!r}, not one of {', '.join(map(str, s.choices))}"
    return None
