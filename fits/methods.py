"""The inference methods, chosen once: ``METHODS`` maps a method's name (the option
``--inference`` / ``method=``) to the :class:`Method` that fits a run by it, reads its run
folder back, evaluates it, predicts from it and wraps it as a
:class:`~bayesdl.fits.posterior.Posterior`. Nothing else asks which method a run used.

A new method is one module beside :mod:`.svi` and :mod:`.nuts` (its fit / load / evaluate /
predict / sample), one :class:`~bayesdl.fits.posterior.Posterior` implementation, one row here,
and its name among the option's choices (``bayesdl.inference.mcmc.METHODS``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bayesdl.fits import nuts, records, svi
from bayesdl.fits.base import Run
from bayesdl.fits.draws import DrawsPosterior
from bayesdl.fits.guide_posterior import GuidePosterior
from bayesdl.fits.posterior import Posterior
from bayesdl.inference import files
from bayesdl.inference.errors import UserError


@dataclass(frozen=True)
class Method:
    """How runs of one inference method are made and used.

    ``fit(workflow_cls, options, out, *, resume, overwrite, progress) -> Run``;
    ``load(run_dir, registry, device, overrides) -> Run``;
    ``evaluate(run_dir, registry, device, overrides, seed) -> dict`` (also ``evaluation.json``);
    ``predict(run_dir, registry, path, device, seed) -> dict``;
    ``sample(run_dir, registry, out, device, seed, overwrite) -> dict``;
    ``posterior``: the :class:`Posterior` class that wraps a :class:`Run` of this method;
    ``guided``: whether the method fits a guide (the workflow then builds one).
    """

    name: str
    guided: bool
    fit: Callable[..., Run]
    load: Callable[..., Run]
    evaluate: Callable[..., dict[str, Any]]
    predict: Callable[..., dict[str, Any]]
    sample: Callable[..., dict[str, Any]]
    posterior: type[Posterior]


SVI = Method(
    "vi", True, svi.fit_run, svi.load, svi.evaluate, svi.predict, svi.sample, GuidePosterior
)
NUTS = Method(
    "nuts", False, nuts.fit_run, nuts.load, nuts.evaluate, nuts.predict, nuts.sample, DrawsPosterior
)
#: method name -> :class:`Method` (the first is the default)
METHODS: dict[str, Method] = {m.name: m for m in (SVI, NUTS)}


def method_named(name: Any) -> Method:
    """The method of the option ``method`` (``--inference``)."""
    if name not in METHODS:
        raise UserError(f"unknown inference method {name!r}; one of {', '.join(METHODS)}")
    return METHODS[name]


def method_of(options: Any) -> Method:
    """The method a run's options ask for (``FitOptions.method``; VI where they name none)."""
    return method_named(getattr(options, "method", SVI.name))


def method_of_folder(run_dir: str | Path) -> Method:
    """The method that made the run folder ``run_dir`` (its ``config.json``'s ``method``; VI
    for a run that names none, and for a folder whose config cannot be read, whose loader
    then says what is wrong with it)."""
    if files.entry(Path(run_dir) / records.CONFIG) is None:
        return SVI
    try:
        name = records.read_config(run_dir)["args"].get("method")
    except UserError:
        return SVI
    return METHODS.get(name, SVI) if isinstance(name, str) else SVI
