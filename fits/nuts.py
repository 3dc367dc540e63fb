"""NUTS runs: ``bayesdl fit MODEL --inference nuts`` (``bayesdl.fit(..., method="nuts")``).

The model's posterior is drawn by Pyro's NUTS (:mod:`bayesdl.inference.mcmc`) instead of fitting
a guide. A NUTS run folder holds ``config.json`` (the options, ``method: nuts``), ``draws.npz``
(``site -> [chains, samples, *shape]``: plain numpy arrays, read with ``allow_pickle=False``),
``summary.json`` (mean, sd, split R-hat and effective sample size of every site of at most 100
elements; ``converged`` is R-hat < 1.05 on all of them), ``metrics.jsonl`` (one row per chain:
draws, divergences, acceptance rate, step size, seconds) and ``nuts_draws.png``; ``evaluate``,
``predict``, ``compare`` and :func:`bayesdl.load` read it.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import torch

from bayesdl.fits import outputs, records
from bayesdl.fits.base import Run, build, seed_draws
from bayesdl.fits.checks import nuts_checks
from bayesdl.fits.draws import DrawsPosterior
from bayesdl.fits.draws_file import check_sites, load_draws, save_draws
from bayesdl.fits.folder import claimed, prepare_out, writable, write_json, write_text
from bayesdl.fits.rebuild import load_workflow
from bayesdl.fits.recording import folder_record, write_record
from bayesdl.fits.records import DRAWS, EVALUATION, METRICS, SUMMARY
from bayesdl.inference import files
from bayesdl.inference.convergence import warn_unconverged
from bayesdl.inference.devices import resolve_device
from bayesdl.inference.errors import UserError
from bayesdl.inference.mcmc import (
    RHAT_LIMIT,
    MCMCResult,
    diagnostics,
    draws_table,
    refuse_params,
    run_nuts,
    with_deterministic,
)
from bayesdl.inference.predictive import mean_std
from bayesdl.workflows.base import Problem, Workflow, start
from bayesdl.workflows.fit_options import FitOptions

FIGURE = "nuts_draws.png"
#: sites of more elements are left out of summary.json (as for VI runs)
MAX_ELEMENTS = 100


# ----------------------------------------------------------------------------- fitting


def fit_run(
    workflow_cls: type[Workflow],
    options: FitOptions,
    out: Path | None,
    *,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = True,
) -> Run:
    """Draw a registered model's posterior with NUTS (into the run folder ``out`` when given);
    the :class:`Run`'s result is an :class:`~bayesdl.inference.mcmc.MCMCResult`."""
    if not getattr(workflow_cls, "nuts", False):
        raise UserError(f"model {workflow_cls.name!r} cannot be sampled with --inference nuts")
    options.sampler.validate()
    options.engine.validate()  # the seed, the device
    if resume:
        raise UserError("a NUTS run cannot be resumed: run it again (with --overwrite)")
    if out is None:
        workflow = start(workflow_cls, options)
        problem = build(workflow, guided=False)
        result = _sample(workflow, problem, progress)
        return Run(workflow, problem, result, summarize_draws(workflow, problem, result))
    out = Path(out)
    prepare_out(out, resume=False, overwrite=overwrite, make=False)
    workflow = start(workflow_cls, options)
    problem = build(workflow, guided=False)  # model and data checked before --out is touched
    refuse_params(problem.model, problem.data, _name(workflow))
    with claimed(out, resume=False, overwrite=overwrite):
        write_record(out, *folder_record(workflow))
        result = _sample(workflow, problem, progress)
        return _write(Run(workflow, problem, result, {}, out), out)


def _sample(workflow: Workflow, problem: Problem, progress: bool) -> MCMCResult:
    engine = workflow.engine
    return run_nuts(
        problem.model,
        problem.data,
        workflow.settings.sampler,
        seed=engine.seed,
        progress=progress,
        max_plate_nesting=float(engine.max_plate_nesting),
        device=resolve_device(engine.device),
        name=_name(workflow),
        init_strategy=workflow.nuts_init_strategy(),
    )


def _name(workflow: Workflow) -> str:
    """The model in messages: a user model's function and file, else its registered name."""
    where = getattr(workflow, "where", None)
    return where() if callable(where) else f"model {type(workflow).name!r}"


def _write(run: Run, out: Path) -> Run:
    """Draws, metrics, figure and summary of a sampled run into ``out``."""
    save_draws(out / DRAWS, run.result.draws)
    write_text(out / METRICS, "".join(json.dumps(r) + "\n" for r in _chain_rows(run.result)))
    if not run.summary:
        run.summary = summarize_draws(run.workflow, run.problem, run.result)
    run.summary["figures"] = [draws_figure(run.result.draws, out)]
    write_json(out / SUMMARY, run.summary)
    return run


def _chain_rows(result: MCMCResult) -> list[dict]:
    return [{"chain": i + 1, **row} for i, row in enumerate(result.chains)]


#: ``{site: {"mean", "std", quantiles, "r_hat", "n_eff"}}`` of draws (as ``summary()``)
site_table = draws_table


def summarize_draws(workflow: Workflow, problem: Problem, result: MCMCResult) -> dict[str, Any]:
    """The entries of a NUTS run's ``summary.json``; warns (one line) where R-hat >= 1.05."""
    config = workflow.settings.sampler
    posterior = draws_table(
        with_deterministic(problem.model, result.draws, problem.data), MAX_ELEMENTS
    )
    diag = diagnostics(result.draws)
    worst = {k: float(torch.as_tensor(d["r_hat"]).max()) for k, d in diag.items()}
    finite = {k: r for k, r in worst.items() if math.isfinite(r)}
    max_rhat = max(finite.values()) if finite else math.nan
    converged = bool(finite) and max_rhat < RHAT_LIMIT and not result.interrupted
    if result.interrupted:
        reason = f"interrupted after {result.num_samples} draws of {result.num_chains} chain(s)"
    elif not finite:
        reason = "no R-hat could be computed (too few draws)"
    else:
        site = max(finite, key=finite.get)
        reason = f"largest split R-hat {max_rhat:.3f} (site {site!r}), limit {RHAT_LIMIT}"
    n_eff = [float(torch.as_tensor(d["n_eff"]).min()) for d in diag.values()]
    summary: dict[str, Any] = {
        "model": type(workflow).name,
        "method": "nuts",
        "guide": None,
        "estimator": None,
        "steps": result.num_chains * (config.warmup + result.num_samples),
        "final_elbo": None,
        "samples": result.num_samples,
        "warmup": config.warmup,
        "chains": result.num_chains,
        "wall_seconds": round(result.wall_seconds, 3),
        "device": result.device,
        "seed": workflow.engine.seed,
        "interrupted": result.interrupted,
        "divergences": sum(c["divergences"] for c in result.chains),
        "converged": converged,
        "convergence": {
            "test": "split R-hat",
            "converged": converged,
            "max_r_hat": max_rhat,
            "min_n_eff": min(n_eff, default=math.nan),
            "reason": reason,
            "advice": "draw more (--samples, --warmup, --chains)",
        },
        "chain_stats": _chain_rows(result),
        "posterior": posterior,
    }
    exact = getattr(workflow, "exact_marginals", None)
    if exact is not None:
        summary["exact_posterior"] = exact(problem)
    user = getattr(workflow, "summarize", None)
    if problem.guide is None and user is not None:  # a user model's sites
        summary.update(user(problem))
    summary.update(nuts_checks(summary, result.num_chains))
    warn_unconverged(summary["convergence"], "NUTS")
    return summary


def _plain(t: Any) -> Any:
    t = torch.as_tensor(t)
    return t.item() if t.dim() == 0 else t.tolist()


def draws_figure(draws: dict[str, torch.Tensor], out: Path, max_panels: int = 6) -> str:
    """``nuts_draws.png``: trace and histogram of each chain for the first elements."""
    from bayesdl.workflows.figures import plt, save

    panels = []
    for name, v in draws.items():
        flat = v.reshape(v.shape[0], v.shape[1], -1)
        for j in range(flat.shape[-1]):
            label = name if flat.shape[-1] == 1 else f"{name}[{j}]"
            panels.append((label, flat[..., j].double().numpy()))
            if len(panels) == max_panels:
                break
        if len(panels) == max_panels:
            break
    rows = max(1, len(panels))
    fig, axes = plt.subplots(rows, 2, figsize=(8, 1.6 * rows + 0.6), squeeze=False)
    for (label, x), (ax_t, ax_h) in zip(panels, axes, strict=False):
        for c, chain in enumerate(x):
            ax_t.plot(chain, lw=0.5, color=f"C{c}")
            ax_h.hist(chain, bins=30, histtype="step", density=True, color=f"C{c}")
        ax_t.set_ylabel(label, fontsize=8)
        ax_h.set_yticks([])
    axes[0][0].set_title("trace per chain", fontsize=9)
    axes[0][1].set_title("marginal per chain", fontsize=9)
    return save(fig, out, FIGURE)


# ----------------------------------------------------------------------------- run folders


def load(
    run_dir: Path,
    registry: dict,
    device: str | None = None,
    overrides: dict[str, Any] | None = None,
) -> Run:
    """A NUTS run folder as a :class:`Run`: workflow, problem (model and data), draws.
    ``overrides`` are not read: the draws are what the run holds (a guide given again to
    :func:`bayesdl.load` has nothing to do)."""
    run_dir = Path(run_dir)
    if files.entry(run_dir / DRAWS) is None:
        raise UserError(f"{run_dir} is a NUTS run without its draws ({DRAWS})")
    workflow, problem = load_workflow(run_dir, registry, device, guided=False)
    dev = resolve_device(workflow.engine.device)
    problem.data = {k: v.to(dev) if torch.is_tensor(v) else v for k, v in problem.data.items()}
    draws = {k: v.to(dev) for k, v in load_draws(run_dir / DRAWS).items()}
    check_sites(problem, draws, run_dir / DRAWS)
    summary = records.read_summary(run_dir)
    if summary is None:
        summary = {"model": records.read_config(run_dir)["model"], "method": "nuts"}
    chains = summary.get("chain_stats") or []
    result = MCMCResult(
        draws=draws,
        wall_seconds=float(summary.get("wall_seconds") or 0.0),
        device=str(dev),
        chains=[{k: v for k, v in c.items() if k != "chain"} for c in chains],
        interrupted=bool(summary.get("interrupted")),
    )
    return Run(workflow, problem, result, summary, run_dir)


def evaluate(
    run_dir: Path,
    registry: dict,
    device: str | None = None,
    overrides: dict[str, Any] | None = None,
    seed: int | None = None,
) -> dict[str, Any]:
    """``bayesdl evaluate`` of a NUTS run: the draws' table (mean, sd, R-hat, ESS), the
    sampler's statistics and, for models that have one, the exact posterior (``overrides``
    are not read: the draws are what they are)."""
    run = load(run_dir, registry, device)
    target = Path(run_dir) / EVALUATION
    if not writable(Path(run_dir)) or (target.is_file() and not os.access(target, os.W_OK)):
        raise UserError(f"cannot write {target}: the run folder is read-only (evaluate a copy)")
    seed_draws(run.workflow, seed)
    result: dict[str, Any] = {
        "posterior": site_table(run.result.draws, MAX_ELEMENTS),
        "divergences": sum(c.get("divergences", 0) for c in run.result.chains),
        "chains": run.result.num_chains,
        "samples": run.result.num_samples,
    }
    exact = getattr(run.workflow, "exact_marginals", None)
    if exact is not None:
        result["exact_posterior"] = exact(run.problem)
    with outputs.not_busy(run_dir):
        write_json(target, result)
    return result


def predict(
    run_dir: Path,
    registry: dict,
    path: Path,
    device: str | None = None,
    seed: int | None = None,
    num_samples: int = 1000,
) -> dict[str, Any]:
    """``bayesdl predict`` of a NUTS run: mean and sd of the observed sites at the inputs of
    ``path`` (a user model's data file; a named model's arrays named like its arguments)."""
    run = load(run_dir, registry, device)
    seed_draws(run.workflow, seed)
    reader = getattr(run.workflow, "data", None)
    if callable(reader) and hasattr(run.workflow.model_options, "x_cols"):  # a user model's data
        new = reader(str(path), require_y=False)
    else:
        from bayesdl.datasets.io import load_arrays

        new = {
            k: torch.as_tensor(v, dtype=run.problem.data[k].dtype)
            for k, v in load_arrays(path).items()
            if k in run.problem.data and torch.is_tensor(run.problem.data[k])
        }
        if not new:
            raise UserError(
                f"{path} gives none of the model's arguments ({', '.join(run.problem.data)})"
            )
    post = DrawsPosterior(run)
    draws = post.predict(new, num_samples)
    observed = run.problem.extra.get("observed") or post.observed_sites()
    return {"num_samples": num_samples, **mean_std({k: draws[k] for k in observed if k in draws})}


def sample(run_dir: Path, *args: Any, **kwargs: Any) -> dict[str, Any]:
    """``bayesdl sample`` draws from a fitted generative model's guide: a NUTS run has none."""
    raise UserError(
        f"{run_dir} is a NUTS run: `bayesdl sample` draws from a generative model fitted by VI"
    )
