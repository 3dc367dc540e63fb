"""The Python face of bayesdl: :func:`fit` any Pyro model, :func:`load` a run folder.

    import bayesdl
    post = bayesdl.fit(model, data={"x": x, "y": y}, guide="auto-mvn", steps=2000)
    post.summary(); post.sample(1000); post.predict({"x": x_new}); post.save("runs/mine")

The command line calls the same functions (:mod:`bayesdl.fits.run`): one code path. The
registry of named models is looked up here only (:func:`registry`, :func:`workflow_for`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bayesdl.fits.posterior import Posterior
from bayesdl.fits.run import fit_posterior, load_posterior
from bayesdl.inference.errors import UserError
from bayesdl.inference.serial import one_at_a_time

if logging.getLogger("pyro").level <= logging.INFO:  # "Guessed max_plate_nesting" etc.
    logging.getLogger("pyro").setLevel(logging.WARNING)


def registry(plugins: tuple[str, ...] | list[str] = ()) -> dict[str, type]:
    """The named models (built-in, and those ``@register`` ed by the ``plugins`` files)."""
    import bayesdl.workflows  # noqa: F401  (registers the built-in models)
    from bayesdl.workflows.registry import REGISTRY
    from bayesdl.workflows.user_code import load_plugins

    load_plugins(plugins)
    return REGISTRY


def workflow_for(model: Any, data: Any = None, plugins: tuple[str, ...] = ()) -> type:
    """The workflow class of ``model``: a registered name, ``FILE.py:function`` or a model
    function / PyroModule given from Python (with its ``data``)."""
    from bayesdl.workflows.trust import is_file_spec
    from bayesdl.workflows.user_classes import file_workflow, python_workflow

    if isinstance(model, str):
        names = registry(plugins)
        if model in names:
            return names[model]
        if is_file_spec(model):
            return file_workflow(model)
        raise UserError(f"unknown model {model!r}; known models: {', '.join(sorted(names))}")
    return python_workflow(model, data)


@one_at_a_time  # Pyro's handler stack is a process global: threads take turns
def fit(
    model: Callable | str,
    data: dict[str, Any] | str | Path | None = None,
    guide: Any = None,
    *,
    out: str | Path | None = None,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool | None = None,
    plugins: tuple[str, ...] | list[str] = (),
    **options: Any,
) -> Posterior:
    """Fit ``guide`` to ``model`` by stochastic variational inference (or, with
    ``method="nuts"``, draw from the posterior with Pyro's NUTS); return the posterior.

    :param model: a Pyro model function (or ``PyroModule``), ``"FILE.py:function"``, or the
        name of a registered model (``"coin"``, ``"linreg"``, ``"bnn"``, ...) whose options
        are keywords (``bayesdl.fit("coin", heads=6, tails=4)``).
    :param data: the model's keyword arguments (tensors, arrays, scalars); for a named model
        or a file model, a data file (its ``data`` option).
    :param guide: an autoguide name (``"auto-normal"``, the default for model functions;
        ``"auto-mvn"``, ``"auto-lowrank"``, ``"auto-delta"``, ``"auto-laplace"``), an autoguide
        class, a guide function or object, or a named model's guide name.
    :param out: a run folder to write while fitting (metrics, checkpoints, summary, figures);
        ``resume=True`` continues it, ``overwrite=True`` replaces it.
    :param options: every engine option of the command line (``steps``, ``lr``,
        ``estimator``, ``particles``, ``batch_size``, ``seed``, ``device``, ``kl_warmup``,
        ...) and the named model's own options; bad values raise :class:`UserError`
        (a ``ValueError``) with the command line's message. ``steps="auto"`` (user models'
        default) fits until the ELBO flattens; ``method="nuts"`` with ``num_samples``,
        ``warmup``, ``chains`` samples instead (user models, ``coin``, ``linreg``) and returns
        a :class:`~bayesdl.fits.draws.DrawsPosterior`.

    Each fit has a parameter store of its own: fits never change one another, and Pyro's
    global store is neither read nor cleared.
    """
    from bayesdl.workflows.fit_options import from_keywords

    if isinstance(model, str) and data is not None:
        if not isinstance(data, str | Path):
            raise UserError(
                f"model {model!r} reads its data through its options: pass a file path as "
                "data=, or fit a model function with data={...}"
            )
        options["data"] = str(Path(data).expanduser().resolve())
        data = None
    workflow = workflow_for(model, data, tuple(plugins))
    if guide is not None:
        options["guide"] = guide
    settings = from_keywords(workflow, **options)
    return fit_posterior(
        workflow,
        settings,
        None if out is None else Path(out),
        resume=resume,
        overwrite=overwrite,
        progress=True if progress is None else progress,
    )


@one_at_a_time
def load(
    run_dir: str | Path,
    model: Callable | None = None,
    guide: Callable | None = None,
    device: str | None = None,
    plugins: tuple[str, ...] | list[str] = (),
    model_files: tuple[str, ...] | list[str] = (),
) -> Posterior:
    """Reopen a run folder made by ``bayesdl fit`` or :meth:`Posterior.save`.

    A model given from Python interactively is not recorded by file: pass it again as
    ``model=`` (and a guide function likewise as ``guide=``). Loading never runs code because
    the folder names it: a model, guide or network file the run records is imported only if
    you fitted that very file (bayesdl's per-user record of fitted code, checked by sha256) or
    name it in ``model_files`` (:mod:`bayesdl.workflows.trust`); the folder's files are read
    as regular files only, bounded and type-checked.
    """
    from bayesdl.workflows import trust

    with trust.named(model_files):
        return _load(Path(run_dir), model, guide, device, plugins)


def _load(run_dir: Path, model, guide, device, plugins) -> Posterior:
    from bayesdl.fits.rebuild import run_registry
    from bayesdl.fits.records import read_config
    from bayesdl.inference import files
    from bayesdl.workflows.user_classes import python_workflow

    if not files.is_dir(run_dir, "run folder"):
        raise UserError(f"{run_dir} is not a run folder")
    names = dict(registry(plugins))
    if model is not None:  # the run's model, given again from Python
        names[read_config(run_dir)["model"]] = python_workflow(model, None)
    else:
        names = run_registry(run_dir, names)
    return load_posterior(run_dir, names, device, guide)


@one_at_a_time
def compare(
    a: Posterior | str | Path,
    b: Posterior | str | Path,
    *,
    num_samples: int = 2000,
    figure: str | Path | None = None,
    seed: int = 0,
    plugins: tuple[str, ...] | list[str] = (),
    model_files: tuple[str, ...] | list[str] = (),
):
    """Compare posterior ``a`` against the reference ``b`` (each a :class:`Posterior` or a
    run folder), per element of every latent site: the difference of means in units of b's
    sd and the ratio of sds, flagged past 0.3 sd or outside [0.7, 1.3]
    (:mod:`bayesdl.reports.compare`). ``num_samples`` draws of a guide (all of a NUTS
    run's); ``figure``: a PNG of the overlaid marginals of the first sites; ``model_files``:
    code files the runs need, named again (see :func:`load`).

    Returns a :class:`~bayesdl.reports.compare.Comparison` (``print`` it for the table;
    ``.to_json()``, ``.flagged``, ``.rows``).
    """
    import pyro

    from bayesdl.fits.draws import DrawsPosterior
    from bayesdl.reports.compare import compare_draws

    def posterior(x):
        if isinstance(x, Posterior):
            return x, str(x.run_dir or type(x).__name__)
        if isinstance(x, str | Path):
            return load(x, plugins=plugins, model_files=model_files), str(x)
        raise UserError(f"compare takes a Posterior or a run folder, got {type(x).__name__}")

    draws, names = [], []
    for x in (a, b):
        post, name = posterior(x)
        pyro.set_rng_seed(seed)
        nuts = isinstance(post, DrawsPosterior)
        draws.append(post.sample() if nuts else post.sample(num_samples))  # NUTS: every draw
        names.append(name)
    result = compare_draws(*draws, names=tuple(names))
    if not result.rows:
        raise UserError(f"{names[0]} and {names[1]} share no latent site of the same shape")
    if figure is not None:
        result.figure(figure)
    return result
