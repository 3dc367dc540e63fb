"""Simulation-based calibration: does the fit recover what the model generated?

    import bayesdl
    result = bayesdl.sbc(model, data={"x": x, "y": y}, replications=100, compile=True)
    print(result)            # per element: p-value, rank shape; the verdict
    result.calibrated        # True when every element's ranks pass the uniformity test

Talts, Betancourt, Simpson, Vehtari & Gelman (2018), "Validating Bayesian inference algorithms
with simulation-based calibration" (arXiv:1804.06788): for ``r = 1..R``,

1. ``theta~_r ~ p(theta)`` and ``y~_r ~ p(y | theta~_r)``: the model run once with its observed
   sites left free (``poutine.uncondition``), at the given data's inputs and shapes; the
   arguments the model observes (``obs=y``, ``obs=y[idx]``) are replaced by the draws;
2. ``q_r``: a real :func:`bayesdl.fit` to ``y~_r`` (VI with any guide, or ``method="nuts"``),
   each with its own parameter store and the seed ``seed + r``;
3. ``L`` posterior draws (:meth:`Posterior.sample`; NUTS: ``L`` evenly spaced draws of the
   chains, so a thinning of ``chains x samples / L``, which leaves them about independent when
   the effective sample size is at least ``L``, as it is checked);
4. the rank of each scalar element of ``theta~_r`` among its ``L`` draws.

If every ``q_r`` is the exact posterior, each rank is uniform on ``{0, ..., L}``; the tests and
the verdict are :mod:`bayesdl.inference.ranks`. Everything is seeded: the same call gives the
same ranks; ``out=DIR`` writes ``sbc.json`` after every replication (Ctrl-C keeps the finished
ones, ``resume=True`` continues) and the rank histograms ``sbc_ranks.png``.
"""

from __future__ import annotations

import hashlib
import math
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyro
import torch

from bayesdl.fits.posterior import Posterior
from bayesdl.inference import ranks as stats
from bayesdl.inference.errors import UserError
from bayesdl.inference.mcmc import MCMCConfig
from bayesdl.inference.simulation import Simulator, replication_seeds
from bayesdl.inference.train import MAX_SEED, FitConfig, Interrupted
from bayesdl.reports.sbc_report import FIGURE, MAX_ELEMENTS, SBC_FILE, SBCResult

if TYPE_CHECKING:
    from bayesdl.workflows.fit_options import FitOptions

#: steps of each replication's fit unless given (a fixed count, the same for every replication)
SBC_STEPS = 1000
#: the options of :class:`UserModel` that say where the data come from: read once, before
#: the replications (each fit gets the simulated data itself)
_DATA_OPTIONS = ("data", "x_cols", "y_col", "arg", "plugin", "model_file", "model_function")


@dataclass
class SBCConfig:
    """The options of ``bayesdl sbc`` beyond ``bayesdl fit`` 's (Python: :func:`sbc` keywords)."""

    replications: int = field(
        default=100,
        metadata={"help": "R: simulated data sets, each fitted once (default %(default)s)"},
    )
    num_draws: int = field(
        default=99,
        metadata={
            "help": "L: posterior draws the truth is ranked among, ranks 0..L (default "
            "%(default)s)",
            "flag": "--draws",
            "metavar": "L",
        },
    )

    def validate(self) -> None:
        """Reject impossible settings with a :class:`UserError`."""
        for flag, v in (("--replications", self.replications), ("--draws", self.num_draws)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise UserError(f"{flag} must be an integer >= 1, got {v!r}")


# ------------------------------------------------------------------------------ one replication


def _fit(model: Callable, data: dict[str, Any], options: dict[str, Any]) -> tuple[Posterior, list]:
    """A real :func:`bayesdl.fit`, its warnings caught (they are counted over replications)."""
    from bayesdl.api import fit

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        post = fit(model, data=data, progress=False, **options)
    return post, list(caught)


def posterior_draws(
    post: Posterior, sites: list[str], num_draws: int, seed: int
) -> tuple[dict[str, torch.Tensor], float | None]:
    """``L`` draws of ``sites`` and, for NUTS, the smallest effective sample size of the
    ranked elements: VI draws ``L`` times from the guide; NUTS takes ``L`` evenly spaced draws
    of its chains (one after another), a thinning by ``chains x samples / L``."""
    from bayesdl.fits.draws import DrawsPosterior

    if not isinstance(post, DrawsPosterior):
        pyro.set_rng_seed(seed)
        return post.sample(num_draws), None
    if post.result.interrupted:  # Ctrl-C inside NUTS: the chains are incomplete
        raise KeyboardInterrupt
    chains = post.draws
    n = post.result.num_chains * post.result.num_samples
    idx = torch.from_numpy(np.linspace(0, n - 1, num_draws).round().astype(np.int64))
    draws = {k: chains[k].reshape(n, *chains[k].shape[2:])[idx] for k in sites if k in chains}
    diag = post.diagnostics()
    ess = [
        float(torch.as_tensor(diag[k]["n_eff"]).reshape(-1)[:MAX_ELEMENTS].min())
        for k in sites
        if k in diag
    ]
    return draws, min(ess) if ess else None


def replicate(
    sim: Simulator, options: dict[str, Any], num_draws: int, seed: int, r: int
) -> dict[str, Any]:
    """Replication ``r``: simulate, fit (seed ``seed + r``), draw, rank. Returns its record:
    ranks and truth of the first :data:`MAX_ELEMENTS` elements of every site, seconds,
    convergence, NUTS's smallest ESS, distinct warnings; or ``error`` when the fit failed."""
    sim_seed, draw_seed, tie_seed = replication_seeds(seed, r)
    record: dict[str, Any] = {"replication": r, "seed": seed + r}
    pyro.set_rng_seed(sim_seed)
    truth, data = sim.draw()
    t0, cpu0 = time.perf_counter(), time.process_time()
    try:
        post, caught = _fit(sim.model, data, {**options, "seed": seed + r})
    except UserError as e:
        return {**record, "error": str(e), "fit_seconds": round(time.perf_counter() - t0, 4)}
    t1, cpu1 = time.perf_counter(), time.process_time()
    draws, ess = posterior_draws(post, list(sim.latent), num_draws, draw_seed)
    generator = torch.Generator().manual_seed(tie_seed)
    ranks, values = {}, {}
    for name, shape in sim.latent.items():
        if name not in draws or tuple(draws[name].shape[1:]) != tuple(shape):
            got = None if name not in draws else tuple(draws[name].shape[1:])
            raise UserError(
                f"the posterior's draws of site {name!r} have shape {got}, the prior's "
                f"{tuple(shape)}: SBC ranks sites the fit draws"
            )
        ranks[name] = stats.ranks(truth[name], draws[name], generator)[:MAX_ELEMENTS].tolist()
        values[name] = truth[name].double().reshape(-1)[:MAX_ELEMENTS].tolist()
    messages = sorted(  # bayesdl's and the user's own (UserWarning), not Pyro's deprecations
        {str(w.message).splitlines()[0] for w in caught if issubclass(w.category, UserWarning)}
    )
    return {
        **record,
        "fit_seconds": round(t1 - t0, 4),
        "fit_cpu_seconds": round(cpu1 - cpu0, 4),
        "draw_seconds": round(time.perf_counter() - t1, 4),
        "converged": post.converged,
        "ess_min": ess,
        "warnings": messages,
        "ranks": ranks,
        "truth": values,
    }


def _fit_options(workflow: type, options: FitOptions) -> dict[str, Any]:
    """The keywords of every replication's :func:`bayesdl.fit`: the engine's, NUTS's, the
    guide and the autoguide's start, as ``options`` has them (the model's defaults applied)."""
    from pyro.infer.autoguide import AutoGuide

    from bayesdl.workflows.user_model import UserModel

    own = {f.name for f in fields(workflow.options)} - {f.name for f in fields(UserModel.Options)}
    if own:
        raise UserError(
            f"sbc fits the model function of {workflow.name!r} to simulated data; its own "
            f"options ({', '.join(sorted(own))}) cannot be passed on"
        )
    guide = options.guide
    if isinstance(guide, AutoGuide | torch.nn.Module):
        raise UserError(
            "sbc needs a guide it can make afresh for every replication: pass the autoguide "
            "class or its name (guide='auto-normal'), or a guide function; an autoguide or "
            "nn.Module instance would carry its fitted values from one fit to the next"
        )
    names = [f.name for f in fields(FitConfig)] + ["guide"]
    names += [f.name for f in fields(MCMCConfig)]
    names += [f.name for f in fields(UserModel.Options) if f.name not in _DATA_OPTIONS]
    args = options.record()
    return {n: args[n] for n in names if n in args}


def _data_sha256(data: dict[str, Any]) -> str:
    h = hashlib.sha256()
    for k in sorted(data):
        v = data[k]
        if torch.is_tensor(v):
            a = v.detach().cpu().contiguous()
            h.update(f"{k}:{a.dtype}:{tuple(a.shape)}".encode())
            h.update(a.numpy().tobytes() if a.dtype != torch.bfloat16 else a.float().numpy())
        else:
            h.update(f"{k}={v!r}".encode())
    return h.hexdigest()


def _plain(v: Any) -> Any:
    """An option's value as ``sbc.json`` holds it (a guide function by its name, inf as
    "inf"), so that a resumed SBC compares its settings with the saved ones."""
    if isinstance(v, float) and not math.isfinite(v):
        return str(v)
    if v is None or isinstance(v, str | int | float | bool):
        return v
    if isinstance(v, list | tuple):
        return [_plain(x) for x in v]
    return getattr(v, "__name__", type(v).__name__)


def _settings(
    workflow: type, options: dict[str, Any], config: SBCConfig, data: dict[str, Any]
) -> dict[str, Any]:
    guide = options.get("guide")
    shown = {k: _plain(v) for k, v in options.items()}
    return {
        "model": workflow.name,
        "method": options.get("method", "vi"),
        "guide": guide if isinstance(guide, str) else getattr(guide, "__name__", str(guide)),
        "replications": config.replications,
        "num_draws": config.num_draws,
        "seed": options["seed"],
        "alpha": stats.ALPHA,
        "max_elements": MAX_ELEMENTS,
        "options": shown,
        "data_sha256": _data_sha256(data),
    }


def _check(options: dict[str, Any], config: SBCConfig) -> None:
    seed = options["seed"]
    if seed + config.replications - 1 > MAX_SEED:
        raise UserError(
            f"--seed {seed} + {config.replications} replications passes 2**32-1: lower --seed"
        )
    if options.get("method") == "nuts":
        total = options["num_samples"] * options["chains"]
        if total < config.num_draws:
            raise UserError(
                f"NUTS draws {options['chains']} x {options['num_samples']} = {total}, fewer "
                f"than --draws {config.num_draws}: raise --samples (SBC thins the chains to L)"
            )


def run_sbc(
    workflow: type,
    options: FitOptions,
    config: SBCConfig,
    out: Path | None = None,
    *,
    overwrite: bool = False,
    resume: bool = False,
    progress: bool = True,
) -> SBCResult:
    """Simulation-based calibration of a user model's workflow with ``options`` (what
    ``bayesdl sbc`` and :func:`sbc` both call)."""
    from bayesdl.workflows.user_model import UserModel

    config.validate()
    if not (isinstance(workflow, type) and issubclass(workflow, UserModel)):
        raise UserError(
            f"sbc takes a model function, FILE.py:function or a registered user model; "
            f"{workflow.name!r} is a built-in workflow with its own data and guides"
        )
    w = workflow(options)
    data = w.data(w.model_options.data)
    options = _fit_options(workflow, options)
    sim = Simulator.of(w.model(), data, w.where())
    _check(options, config)
    pyro.set_rng_seed(options["seed"])
    sim.check(sim.draw()[1], w.where())
    settings = _settings(workflow, options, config, data)
    sites = {
        k: {
            "shape": list(shape),
            "elements": stats.element_labels(k, tuple(shape), min(shape.numel(), MAX_ELEMENTS)),
        }
        for k, shape in sim.latent.items()
    }
    notes = list(sim.notes) + [
        f"site {k!r}: the first {MAX_ELEMENTS} of {shape.numel()} elements are ranked"
        for k, shape in sim.latent.items()
        if shape.numel() > MAX_ELEMENTS
    ]
    if out is None:
        return _loop(sim, options, config, SBCResult(settings, sites, [], notes), progress)
    from bayesdl.fits.folder import locked

    out = Path(out)
    done = prepare_folder(out, settings, overwrite=overwrite, resume=resume)
    with locked(out):
        start = SBCResult(settings, sites, done[: config.replications], notes, out=out)
        return _loop(sim, options, config, start, progress)


def prepare_folder(
    out: Path, settings: dict[str, Any], *, overwrite: bool, resume: bool
) -> list[dict[str, Any]]:
    """Check and make the folder ``out``; the replications of its ``sbc.json`` to continue
    (``resume``: made with the same settings), else none. An SBC is never replaced without
    ``overwrite``, and a fit's run folder is refused as it is by ``bayesdl fit``."""
    from bayesdl.fits.folder import prepare_out

    path = out / SBC_FILE
    if resume and overwrite:
        raise UserError("--resume continues the SBC in --out, --overwrite replaces it: pick one")
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} is a file, not a folder")
    if path.exists() and not (overwrite or resume):
        raise UserError(
            f"{out} already holds an SBC ({SBC_FILE}): add --resume to continue it, "
            "--overwrite to replace it, or choose another --out"
        )
    if resume and not path.exists():
        raise UserError(f"--resume: {out} holds no {SBC_FILE} to continue")
    prepare_out(out, resume=False, overwrite=overwrite)
    if not resume:
        for name in (SBC_FILE, FIGURE):
            (out / name).unlink(missing_ok=True)
        return []
    return _resumed(path, settings)


def _resumed(path: Path, settings: dict[str, Any]) -> list[dict[str, Any]]:
    """The finished replications of ``path`` after checking its settings against ours (the
    number of replications, and the options that do not change a fit, may differ)."""
    import json

    from bayesdl.fits.folder import RESUMABLE

    try:
        old = json.loads(path.read_text())
        before, done = old["settings"], old["replications"]
        ok = isinstance(done, list) and all(
            isinstance(rep, dict) and rep.get("replication") == i for i, rep in enumerate(done)
        )
    except (OSError, ValueError, KeyError, TypeError):
        ok = False
    if not ok:
        raise UserError(f"--resume: {path} is unreadable or not an sbc.json of bayesdl")

    def comparable(s: dict) -> dict:
        opts = {k: v for k, v in (s.get("options") or {}).items() if k not in RESUMABLE}
        return {**{k: v for k, v in s.items() if k != "replications"}, "options": opts}

    a, b = comparable(before), comparable(settings)
    changed = sorted(k for k in a.keys() | b.keys() if a.get(k) != b.get(k))
    if "options" in changed:
        changed.remove("options")
        changed += sorted(
            k for k in a["options"].keys() | b["options"].keys()
            if a["options"].get(k) != b["options"].get(k)
        )  # fmt: skip
    if changed:
        raise UserError(
            f"--resume with other settings than the SBC in {path.parent} ({', '.join(changed)}); "
            "resume with the same options and data, or choose another --out"
        )
    return done


def _write(result: SBCResult, figure: bool = False) -> None:
    from bayesdl.fits.folder import write_json

    if figure and result.ranked():
        result.figure(result.out / FIGURE)
    write_json(result.out / SBC_FILE, result.to_json())


def _loop(
    sim: Simulator, options: dict[str, Any], config: SBCConfig, start: SBCResult, progress: bool
) -> SBCResult:
    """The replications after those of ``start``; ``sbc.json`` rewritten after each; Ctrl-C
    ends the loop with the finished ones."""
    from dataclasses import replace

    from tqdm.auto import tqdm

    done = list(start.replications)
    bar = tqdm(
        total=config.replications,
        initial=len(done),
        disable=None if progress else True,  # None: off when stderr is not a terminal
        desc="sbc",
        unit="fit",
        dynamic_ncols=True,
        leave=False,
    )
    interrupted = False
    try:
        for r in range(len(done), config.replications):
            done.append(replicate(sim, options, config.num_draws, options["seed"], r))
            if r == 0 and "error" in done[0]:
                raise UserError(f"sbc: the first replication's fit failed: {done[0]['error']}")
            bar.update(1)
            if start.out is not None:
                _write(replace(start, replications=done))
    except (KeyboardInterrupt, Interrupted):
        interrupted = True
    finally:
        bar.close()
    result = replace(start, replications=done, interrupted=interrupted)
    if result.out is not None:
        _write(result, figure=True)
    _warn(result)
    return result


def _warn(result: SBCResult) -> None:
    """One line per distinct warning of the fits (with how many warned), and for Ctrl-C."""
    counts: dict[str, int] = {}
    for rep in result.replications:
        for message in rep.get("warnings", []):
            counts[message] = counts.get(message, 0) + 1
    for message, n in sorted(counts.items(), key=lambda kv: -kv[1])[:3]:
        warnings.warn_explicit(
            f"sbc: {n} of {len(result.replications)} fits warned: {message}",
            UserWarning,
            "bayesdl",
            0,
        )
    if result.interrupted:
        where = f"; {result.out / SBC_FILE} keeps them (--resume continues)" if result.out else ""
        print(
            f"sbc: interrupted after {len(result.replications)} of "
            f"{result.settings['replications']} replications{where}",
            file=sys.stderr,
        )


def sbc(
    model: Callable | str,
    data: dict[str, Any] | str | Path | None = None,
    *,
    replications: int = SBCConfig.replications,
    num_draws: int = SBCConfig.num_draws,
    guide: Any = None,
    method: str = "vi",
    seed: int = 0,
    progress: bool | None = None,
    out: str | Path | None = None,
    overwrite: bool = False,
    resume: bool = False,
    plugins: tuple[str, ...] | list[str] = (),
    **fit_options: Any,
) -> SBCResult:
    """Simulation-based calibration (Talts et al. 2018) of fitting ``model`` with ``guide``
    (or NUTS) at the inputs and shapes of ``data``: ``replications`` times, draw the latents
    from the prior and the observations from the model, fit them with :func:`bayesdl.fit`
    (seed ``seed + r``), rank the truth among ``num_draws`` posterior draws.

    :param model: a Pyro model function, ``"FILE.py:function"`` or a registered user model.
    :param data: the model's keyword arguments (a data file for a file or registered model);
        the arguments it observes are replaced by simulated data, the others (inputs) kept.
    :param guide, method: as :func:`bayesdl.fit` (an autoguide name or class, a guide
        function; ``method="nuts"`` samples each replication with NUTS).
    :param fit_options: every option of :func:`bayesdl.fit` (``steps``, default
        :data:`SBC_STEPS` here, a fixed count; ``lr``, ``compile=True``, ``num_samples``...).
    :param out: a folder for ``sbc.json`` (after every replication) and ``sbc_ranks.png``;
        ``resume=True`` continues its replications, ``overwrite=True`` replaces it.
    :returns: an :class:`SBCResult`; ``.calibrated`` is true when every ranked element passes
        the uniformity test. Ctrl-C returns the finished replications (``.interrupted``).
    """
    from bayesdl.api import workflow_for
    from bayesdl.workflows.fit_options import from_keywords

    options = dict(fit_options)
    if isinstance(model, str) and data is not None:
        if not isinstance(data, str | Path):
            raise UserError(
                f"model {model!r} reads its data through its options: pass a file path as "
                "data=, or give a model function with data={...}"
            )
        options["data"] = str(Path(data).expanduser().resolve())
        data = None
    workflow = workflow_for(model, data, tuple(plugins))
    if guide is not None:
        options["guide"] = guide
    options.setdefault("steps", SBC_STEPS)
    return run_sbc(
        workflow,
        from_keywords(workflow, method=method, seed=seed, **options),
        SBCConfig(replications, num_draws),
        None if out is None else Path(out),
        overwrite=overwrite,
        resume=resume,
        progress=True if progress is None else progress,
    )
