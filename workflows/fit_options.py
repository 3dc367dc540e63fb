"""One fit's options as typed, frozen objects: the model's own, the guide, the engine's, the
sampler's.

A model declares its options once, as a dataclass (:mod:`bayesdl.workflows.options` derives
the command-line flags and the Python keywords from it). Whatever the options come from, they
end as the same :class:`FitOptions`:

* Python keywords, :func:`from_keywords` (``bayesdl.fit("coin", heads=6)``): every option at
  the model's default, those named checked and converted as their command-line strings would
  be -- no argparse;
* the command line, :func:`from_namespace`: argparse parses argv (:func:`fit_parser`), its
  result is converted;
* a run's ``config.json``, :func:`from_record`: the saved values, options added since the run
  was made at their defaults.

A model never changes its options; a value it derives from them (the resolved guide, a
default that depends on other options) is a new object made once before the run, by
:meth:`~bayesdl.workflows.base.Workflow.derive`. ``config.json``'s ``"args"`` is
:meth:`FitOptions.record` of that object.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields, make_dataclass, replace
from typing import Any

from bayesdl.inference.config import internal
from bayesdl.inference.errors import UserError
from bayesdl.inference.mcmc import MCMCConfig
from bayesdl.inference.train import FitConfig
from bayesdl.workflows.options import _convert, engine_defaults, option_specs

__all__ = [
    "FitOptions",
    "NoOptions",
    "from_argv",
    "from_keywords",
    "from_namespace",
    "from_record",
]


@dataclass(frozen=True)
class NoOptions:
    """The options of a model that declares none of its own."""


@dataclass(frozen=True)
class FitOptions:
    """Everything a fit is told: ``model``, an instance of the workflow's own options
    dataclass (:attr:`Workflow.options`); ``guide``, a guide name or spec (or a guide given
    from Python); ``engine``, the :class:`FitConfig`; ``sampler``, the :class:`MCMCConfig` of a
    model NUTS may sample (else ``None``); ``plugin``, the ``--plugin`` files."""

    model: Any = field(default_factory=NoOptions)
    guide: Any = ""
    engine: FitConfig = field(default_factory=FitConfig)
    sampler: MCMCConfig | None = None
    plugin: tuple[str, ...] = ()

    @property
    def method(self) -> str:
        """``vi`` (fit the guide) or ``nuts`` (draw with Pyro's NUTS, no guide)."""
        return self.sampler.method if self.sampler is not None else "vi"

    def _parts(self) -> dict[str, Any]:
        parts = {"model": self.model, "engine": self.engine}
        if self.sampler is not None:
            parts["sampler"] = self.sampler
        return parts

    def record(self) -> dict[str, Any]:
        """``{option: value}`` of every option, as ``config.json``'s ``"args"`` holds them
        (one flat table, the names of the flags; tuples as lists)."""
        out: dict[str, Any] = {}
        for name, part in self._parts().items():
            out.update(
                {f.name: getattr(part, f.name) for f in fields(part) if f not in internal(part)}
            )
            if name == "model":
                out["guide"] = self.guide
        out["plugin"] = self.plugin
        return {k: list(v) if isinstance(v, tuple) else v for k, v in out.items()}

    def replace(self, **values: Any) -> FitOptions:
        """A copy with the options named replaced (each in the part that declares it); an
        option no part declares is a ``KeyError``."""
        changes: dict[str, Any] = {}
        for key in ("guide", "plugin"):
            if key in values:
                changes[key] = _frozen(values.pop(key))
        for name, part in self._parts().items():
            mine = {k: _frozen(values.pop(k)) for k in list(values) if _declares(part, k)}
            if mine:
                changes[name] = replace(part, **mine)
        if values:
            raise KeyError(next(iter(values)))
        return replace(self, **changes)


def _declares(part: Any, name: str) -> bool:
    return any(f.name == name for f in fields(part))


def _frozen(value: Any) -> Any:
    return tuple(value) if isinstance(value, list) else value


_LEGACY: dict[type, type] = {}


def options_class(workflow: type) -> type:
    """The dataclass of ``workflow``'s own options: :attr:`Workflow.options`; for a plugin that
    still declares argparse options (overrides ``add_arguments``), a frozen dataclass of
    them; :class:`NoOptions` for none."""
    if workflow.options is not None:
        return workflow.options
    saved = workflow.option_defaults()
    if not saved:
        return NoOptions
    cls = _LEGACY.get(workflow)
    if cls is None:
        cls = make_dataclass(
            f"{workflow.__name__}Options",
            [(k, Any, field(default=_frozen(v))) for k, v in saved.items()],
            frozen=True,
        )
        _LEGACY[workflow] = cls
    return cls


def _build(workflow: type, values: dict[str, Any]) -> FitOptions:
    """The options object of ``workflow`` from ``{option: value}`` (values already of their
    types); options not named take the model's defaults, names no part declares are ignored."""
    own = options_class(workflow)
    mine = {**workflow.option_defaults(), **values}
    model = own(**{f.name: _frozen(mine[f.name]) for f in fields(own) if f.name in mine})
    engine = {**engine_defaults(workflow), **values}
    if (
        engine.get("scheduler")
        and engine["lr_schedule"] == engine_defaults(workflow)["lr_schedule"]
    ):
        engine["lr_schedule"] = "constant"  # a scheduler replaces the model's own schedule
    sampler = None
    if workflow.nuts:
        sampler = MCMCConfig(
            **{f.name: values[f.name] for f in fields(MCMCConfig) if f.name in values}
        )
    return FitOptions(
        model=model,
        guide=canonical_guide(workflow, values.get("guide", workflow.default_guide)),
        engine=FitConfig(
            **{f.name: _frozen(engine[f.name]) for f in fields(FitConfig) if f.name in engine}
        ),
        sampler=sampler,
        plugin=tuple(values.get("plugin") or ()),
    )


def _spelling(name: str) -> str:
    return name.lower().replace("-", "").replace("_", "")


#: spellings of a guide that name another guide's too (one table for every model): a name is
#: its model's guide whatever its case, hyphens and underscores, or one of these
GUIDE_ALIASES: dict[str, str] = {"mf": "meanfield", "fullcov": "fullcovariance"}


def canonical_guide(workflow: type, guide: Any) -> Any:
    """The model's own name of guide ``guide`` (``mean-field``, ``meanfield``, ``Mean_Field``
    are linreg's ``mean-field`` and bnn's ``meanfield``); any other value as given."""
    if not isinstance(guide, str) or guide in workflow.guides:
        return guide
    key = GUIDE_ALIASES.get(_spelling(guide), _spelling(guide))
    for name in workflow.guides:
        if _spelling(name) == key:
            return name
    return guide


def from_keywords(workflow: type, **keywords: Any) -> FitOptions:
    """The options of ``workflow`` from Python keywords: every option at the model's default,
    except those named, which are checked and converted as their command-line strings would
    be (``heads=6``, ``steps=2000``, ``lr=0.1``, ``batch_size=0`` for the full batch); a bad
    value or an unknown name is a :class:`UserError` naming the option and its flag."""
    keywords, python_optim = _optimizer_keywords(keywords)
    if "init" in keywords or "init_value" in keywords:
        from bayesdl.workflows.init_options import python_init_keywords

        keywords = python_init_keywords(keywords)
    specs = option_specs(workflow)
    legacy = set(workflow.option_defaults()) if workflow.options is None else set()
    known = set(specs) | legacy
    unknown = sorted(set(keywords) - known)
    if unknown:
        raise UserError(
            f"unknown option {unknown[0]!r} for model {workflow.name!r}; "
            f"options: {', '.join(sorted(known))}"
        )
    values = {}
    for name, value in keywords.items():
        if name == "guide" and not isinstance(value, str | os.PathLike) and callable(value):
            values[name] = value  # a guide function, object or autoguide class from Python
        elif name in specs:
            values[name] = _convert(specs[name], value, workflow.name)
        else:  # an argparse option of a plugin's own: as given
            values[name] = value
    if python_optim.get("lr") is not None and "lr" in values and values["lr"] != python_optim["lr"]:
        raise UserError(
            f"lr={values['lr']} and the optimizer's lr={python_optim['lr']} differ: give one"
        )
    return _build(workflow, {**values, **python_optim})


_OPTIM_KEYWORDS = ("optim", "optimizer", "optim_args", "scheduler", "scheduler_args")


def _optimizer_keywords(keywords: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Pyro's spelling from Python (``optim=pyro.optim.ClippedAdam({...})``, a torch
    optimizer class, ``optim_args={...}``, ``scheduler=``...) split off the other keywords and
    translated into the engine's options (:func:`~bayesdl.inference.optimizers.from_python`).
    Names and tuples of ``"k=v"`` strings stay keywords, checked as the command line's."""
    from bayesdl.inference.optimizers import from_python, parse_items

    given = {k: keywords[k] for k in _OPTIM_KEYWORDS if k in keywords}
    if "optim" in given and "optimizer" in given:
        raise UserError("give one of optim= and optimizer= (the same option)")
    optim = given.get("optim", given.get("optimizer"))
    plain = all(
        v is None or isinstance(v, str) or (isinstance(v, list | tuple) and not isinstance(v, dict))
        for v in given.values()
    )
    rest = {k: v for k, v in keywords.items() if k not in given}
    if not given or plain:
        if "optim" in given:
            rest["optimizer"] = given["optim"]
        return {**rest, **{k: v for k, v in given.items() if k != "optim"}}, {}

    def as_dict(v: Any, flag: str) -> dict[str, Any] | None:
        return v if isinstance(v, dict) or v is None else parse_items(tuple(v), flag)

    translated = from_python(
        optim if optim is not None else "adam",
        as_dict(given.get("optim_args"), "optim_args"),
        given.get("scheduler"),
        as_dict(given.get("scheduler_args"), "scheduler_args"),
    )
    return rest, translated


def from_namespace(workflow: type, parsed: Any) -> FitOptions:
    """The options of ``workflow`` from what :func:`~bayesdl.workflows.options.fit_parser`
    parsed (argparse's ``Namespace``; the entries a command adds of its own, such as
    ``--out``, are left out)."""
    return _build(workflow, dict(vars(parsed)))


def from_record(workflow: type, args: dict[str, Any]) -> FitOptions:
    """The options a run was made with, from its ``config.json``'s ``"args"`` (checked by
    :func:`~bayesdl.fits.records.check_args`): infinities saved as strings come back as
    floats; options added since the run was made take their defaults (or the workflow's
    ``record_defaults``); entries no option declares (``model_file``, options since removed)
    are left out."""
    saved = {k: float(v) if v in ("inf", "-inf") else v for k, v in args.items()}
    return _build(workflow, {**getattr(workflow, "record_defaults", {}), **saved})


def from_argv(workflow: type, argv: list[str], prog: str | None = None) -> FitOptions:
    """The options of ``bayesdl fit NAME ARGV...`` (:func:`from_namespace` of what
    :func:`~bayesdl.workflows.options.fit_parser` parses; a bad flag is a :class:`UserError`)."""
    from bayesdl.workflows.options import fit_parser

    parser = fit_parser(workflow, prog or f"bayesdl fit {workflow.name}")
    return from_namespace(workflow, parser.parse_args(list(argv)))
