"""The tour's sections where NUTS teaches something (``bayesdl tour``).

* Linear regression on the diabetes data: the exact posterior is Gaussian with correlated
  coefficients; mean-field VI finds the means but shrinks every marginal sd towards
  ``1 / sqrt(Lambda_kk)`` (the precision's diagonal), NUTS matches the closed form.
* Eight schools (``examples/eight_schools.py``): the group scale ``tau`` and the school effects
  form a funnel; mean-field VI underestimates ``tau``, NUTS finds ``E[tau | y]`` (quadrature).

Each section fits a VI run and a NUTS run into the tour folder, compares them
(:mod:`bayesdl.reports.compare`) and returns its HTML.
"""

from __future__ import annotations

import html
import shlex
import sys
from pathlib import Path

import numpy as np

from bayesdl.fits.nuts import site_table
from bayesdl.fits.run import RUN_FILES, Run, fit_run
from bayesdl.inference.errors import UserError
from bayesdl.inference.mcmc import RHAT_LIMIT
from bayesdl.inference.predictive import draw, latent_sites
from bayesdl.reports import page as report
from bayesdl.reports import verdict
from bayesdl.reports.compare import FIGURE, MEAN_LIMIT, SD_RANGE, Comparison, compare_draws
from bayesdl.workflows.fit_options import from_keywords
from bayesdl.workflows.registry import REGISTRY

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
#: quick settings: the whole of both sections takes about a minute on one core
NUTS_SAMPLES, NUTS_WARMUP = 300, 200


def vi_draws(run: Run, num_samples: int = 2000) -> dict:
    """``num_samples`` draws of a VI run's latent sites, ``{site: [n, *shape]}``."""
    problem = run.problem
    with problem.scope():
        sites = list(latent_sites(problem.guide, problem.data))
        return draw(problem.model, problem.guide, problem.data, num_samples, sites)


#: the run folders of both sections, under the tour's folder
RUN_DIRS = ("linreg-mean-field", "linreg-nuts", "schools-vi", "schools-nuts")


def refuse_existing(out: Path) -> None:
    """Refuse (before anything is fitted) a tour folder that already holds these runs."""
    for name in RUN_DIRS:
        run_dir = Path(out) / "nuts" / name
        if run_dir.exists() and (
            not run_dir.is_dir() or any((run_dir / f).exists() for f in RUN_FILES)
        ):
            raise UserError(
                f"tour: {run_dir} already holds a run; choose another --out, or add "
                "--overwrite to replace the tour's runs"
            )


def _fit(workflow, run_dir: Path, argv: list[str], options: dict, settings: dict) -> Run:
    print(f"[tour] {workflow.name} {shlex.join(argv)}", file=sys.stderr, flush=True)
    return fit_run(workflow, from_keywords(workflow, **options), run_dir, **settings)


def _command(model: str, argv: list[str], run_dir: Path) -> str:
    return f"bayesdl fit {model} {shlex.join(argv)} --out {run_dir}"


def _compare_block(vi: Run, nuts: Run, out: Path, names: tuple[str, str]) -> tuple[str, Comparison]:
    cmp = compare_draws(vi_draws(vi), nuts.result.flat(), names=names)
    cmp.figure(out / FIGURE)
    flagged = cmp.flagged
    shown = ", ".join(flagged[:12]) + ("..." if len(flagged) > 12 else "")
    return (
        f"<p><code>bayesdl compare {html.escape(str(vi.out))} {html.escape(str(nuts.out))}"
        f"</code>: {len(flagged)} of {len(cmp.rows)} elements flagged"
        + (f" ({html.escape(shown)})" if flagged else "")
        + f"; NUTS split R-hat at most {nuts.summary['convergence']['max_r_hat']:.3f} "
        f"(limit {RHAT_LIMIT}), {nuts.summary['divergences']} divergences.</p>"
        + " The figure shows the flagged elements first."
        + f"<div class=figs>{report.image(out / FIGURE)}</div>"
    ), cmp


def _agreement(
    parts: list[tuple[str, list[tuple[str, float, float, float]]]],
) -> tuple[bool | None, str]:
    """Each ``(what, checks)`` of :func:`bayesdl.reports.verdict.within`, in one text."""
    results = [(what, *verdict.within(checks)) for what, checks in parts]
    ok = [r[1] for r in results]
    agrees = False if False in ok else (True if ok and all(ok) else None)
    return agrees, "; ".join(f"{what}: {text}" for what, _, text in results)


def _close(name: str, value: float, ref: float, sd: float) -> tuple[str, float, float, float]:
    """``value`` within :data:`MEAN_LIMIT` of ``sd`` around ``ref`` (``bayesdl compare``'s rule)."""
    return (name, value, ref - MEAN_LIMIT * sd, ref + MEAN_LIMIT * sd)


def _ratio(name: str, value: float, ref: float) -> tuple[str, float, float, float]:
    """``value / ref`` within :data:`SD_RANGE` (``bayesdl compare``'s rule)."""
    return (f"{name} ratio", value / ref, *SD_RANGE)


def _cmp_checks(cmp: Comparison) -> list[tuple[str, float, float, float]]:
    """The comparison's elements as checks, as ``bayesdl compare`` flags them: the difference
    of means within :data:`MEAN_LIMIT` reference sd, the sd ratio within :data:`SD_RANGE`."""
    checks = []
    for k, r in cmp.rows.items():
        checks.append((f"{k} diff/sd", r["mean_diff_sd"], -MEAN_LIMIT, MEAN_LIMIT))
        checks.append((f"{k} sd ratio", r["sd_ratio"], *SD_RANGE))
    return checks


def checks_block(run: Run) -> str:
    """The VI run's own verdict (``summary.json``'s ``checks``): without NUTS beside it, the
    fit says whether it can be trusted (k-hat: Yao et al. 2018)."""
    from bayesdl.fits.checks import verdict_line

    s = run.summary
    k = (s.get("checks") or {}).get("k_hat") or {}
    why = k.get("reason") or (k.get("corrected") or {}).get("note") or ""
    return (
        f"<p>The VI run's own checks, no NUTS needed: <b>{html.escape(verdict_line(s))}</b>"
        + (f" ({html.escape(why)})" if why else "")
        + ". k-hat is the Pareto shape of the importance ratios p(theta, y) / q(theta) over "
        "1000 guide draws: above 0.7 the guide is not to be trusted for this model.</p>"
    )


def linreg_section(out: Path, settings: dict, quick: bool = False) -> tuple[str, verdict.Verdict]:
    """Mean-field VI vs NUTS vs the closed form, on the diabetes regression."""
    w = REGISTRY["linreg"]
    samples, warmup = (60, 60) if quick else (NUTS_SAMPLES, NUTS_WARMUP)
    vi_argv = ["--guide", "mean-field"] + (["--steps", "300"] if quick else [])
    nuts_argv = ["--inference", "nuts", "--samples", str(samples), "--warmup", str(warmup)]
    nuts_argv.append("--dense-mass")
    vi_dir, nuts_dir = out / "linreg-mean-field", out / "linreg-nuts"
    vi_options = {"guide": "mean-field", **({"steps": 300} if quick else {})}
    nuts_options = {"method": "nuts", "num_samples": samples, "warmup": warmup, "dense_mass": True}
    vi = _fit(w, vi_dir, vi_argv, vi_options, settings)
    nuts = _fit(w, nuts_dir, nuts_argv, nuts_options, settings)
    exact, fitted = vi.summary["exact_posterior"], vi.summary["fitted"]
    optimum = vi.summary["mean_field_optimum_std"]
    post = site_table(nuts.result.draws)["theta"]
    rows = [
        [f"theta_{k}", exact["mean"][k], post["mean"][k], fitted["mean"][k],
         exact["std"][k], post["std"][k], fitted["std"][k], optimum[k]]
        for k in range(len(exact["mean"]))
    ]  # fmt: skip
    ratio = np.array(fitted["std"]) / np.array(exact["std"])
    block, _ = _compare_block(vi, nuts, nuts_dir, ("mean-field VI", "NUTS"))
    n_sd = [float(v) for v in post["std"]]
    agrees, agreement = _agreement([
        ("NUTS vs the closed form",
         [_close(f"theta_{k} mean", float(post["mean"][k]), exact["mean"][k], exact["std"][k])
          for k in range(len(n_sd))]
         + [_ratio(f"theta_{k} sd", n_sd[k], exact["std"][k]) for k in range(len(n_sd))]),
        ("mean-field VI vs its family's best (exact means, sds 1/sqrt(Lambda_kk))",
         [_close(f"theta_{k} mean", fitted["mean"][k], exact["mean"][k], exact["std"][k])
          for k in range(len(n_sd))]
         + [_ratio(f"theta_{k} sd", fitted["std"][k], optimum[k]) for k in range(len(n_sd))]),
    ])  # fmt: skip
    v = verdict.runs_verdict([("mean-field VI", vi.summary), ("NUTS", nuts.summary)], agrees,
                             agreement)  # fmt: skip
    parts = [
        "<section><h2>linreg: mean-field VI vs NUTS vs the closed form</h2>",
        "<p>The exact posterior of theta is Gaussian; the diabetes features are correlated, so "
        "are the coefficients. NUTS needs no family and matches the closed form. Mean-field VI "
        "gets the means but not the spread: the best factorized Gaussian has marginal sds "
        "1/sqrt(Lambda_kk) (the precision's diagonal, column 'mean-field optimum'), here "
        f"{ratio.min():.2f} to {ratio.max():.2f} of the exact ones.</p>",
        report.table(
            [
                "coefficient",
                "exact mean",
                "NUTS mean",
                "mean-field mean",
                "exact sd",
                "NUTS sd",
                "mean-field sd",
                "mean-field optimum sd",
            ],
            rows,
        ),  # fmt: skip
        block,
        "<p class=meta>commands: <code>"
        + html.escape(_command("linreg", vi_argv, vi_dir))
        + "</code>; <code>"
        + html.escape(_command("linreg", nuts_argv, nuts_dir))
        + "</code></p></section>",
    ]
    return "\n".join(parts), v


def schools_section(out: Path, settings: dict, quick: bool = False) -> tuple[str, verdict.Verdict]:
    """Mean-field VI vs NUTS vs quadrature on eight schools (the funnel)."""
    from bayesdl.workflows.user_classes import file_workflow
    from bayesdl.workflows.user_code import load_module

    path, data = EXAMPLES / "eight_schools.py", EXAMPLES / "data" / "eight_schools.csv"
    title = "<section><h2>eight schools: mean-field VI vs NUTS (the funnel)</h2>"
    if not path.exists() or not data.exists():
        missing = "<p>examples/eight_schools.py is not here (a wheel install).</p></section>"
        return title + missing, verdict.no_fit("the example is not installed")
    spec = f"{path}:model"
    w = file_workflow(spec)
    samples, warmup = (60, 60) if quick else (NUTS_SAMPLES, 300)
    vi_argv = ["--data", str(data), "--guide", "auto-normal"] + (
        ["--steps", "300"] if quick else []
    )
    nuts_argv = ["--data", str(data), "--inference", "nuts", "--samples", str(samples),
                 "--warmup", str(warmup)]  # fmt: skip
    vi_dir, nuts_dir = out / "schools-vi", out / "schools-nuts"
    vi_options = {"data": str(data), "guide": "auto-normal", **({"steps": 300} if quick else {})}
    nuts_options = {"data": str(data), "method": "nuts", "num_samples": samples, "warmup": warmup}
    vi = _fit(w, vi_dir, vi_argv, vi_options, settings)
    nuts = _fit(w, nuts_dir, nuts_argv, nuts_options, settings)
    y, sigma = (vi.problem.data[k].double().cpu().numpy() for k in ("y", "sigma"))
    exact = load_module(path).exact_posterior_means(y, sigma)
    vd = vi_draws(vi)
    nd = nuts.result.flat()
    rows = [
        [k, exact[k], float(nd[k].mean()), float(vd[k].mean()), float(nd[k].std()),
         float(vd[k].std())]
        for k in ("mu", "tau")
    ]  # fmt: skip
    block, cmp = _compare_block(vi, nuts, nuts_dir, ("mean-field VI", "NUTS"))
    agrees, agreement = _agreement([
        ("NUTS vs quadrature", [_close(f"E[{r[0]}]", r[2], r[1], r[4]) for r in rows]),
        ("mean-field VI vs NUTS", _cmp_checks(cmp)),
    ])  # fmt: skip
    v = verdict.runs_verdict([("mean-field VI", vi.summary), ("NUTS", nuts.summary)], agrees,
                             agreement)  # fmt: skip
    parts = [
        title,
        "<p>y_j ~ N(mu + tau eta_j, sigma_j^2), eta_j ~ N(0, 1), tau ~ HalfCauchy(5): small tau "
        "squeezes the school effects together, a funnel that a factorized Gaussian (auto-normal, "
        "the default guide) cannot follow; it underestimates tau and its spread. NUTS on the "
        "non-centred model matches E[tau | y] computed by quadrature.</p>",
        report.table(
            ["quantity", "exact mean", "NUTS mean", "mean-field mean", "NUTS sd", "mean-field sd"],
            rows,
        ),  # fmt: skip
        block,
        checks_block(vi),
        "<p class=meta>commands: <code>"
        + html.escape(_command(spec, vi_argv, vi_dir))
        + "</code>; <code>"
        + html.escape(_command(spec, nuts_argv, nuts_dir))
        + "</code></p></section>",
    ]
    return "\n".join(parts), v


def sections(
    out: Path, overwrite: bool = False, progress: bool = False, quick: bool = False
) -> list[str]:
    """Both sections, their runs in ``out/nuts``; ``quick``: tiny settings (tests)."""
    out = Path(out) / "nuts"
    settings = {"overwrite": overwrite, "progress": progress}
    return [
        verdict.shown(linreg_section, out, settings, quick),
        verdict.shown(schools_section, out, settings, quick),
    ]
