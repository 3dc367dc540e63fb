"""The tour's sections that check a claim of the lecture against numbers (``bayesdl tour``).

* Coin, sequential updating: each batch's posterior is the next batch's prior; the end equals
  the posterior of all flips at once (exactly in closed form, within fitting noise for fits).
* "In the limit of infinite data the posterior collapses into a point": posterior sd against N
  (the ``1 / sqrt(N)`` rate), MLE, MAP and Bayes predictives converging, the point estimates'
  over-confidence at small N (expected log loss of the next flip, exact over datasets).
* "Not the amount of data ... but how much data per parameter": a BNN against the same network
  fitted by MLE and MAP as the digits training set shrinks.
* ``KL(q || p(theta | D)) = log p(D) - ELBO(q)`` for the coin and linear regression, guides of
  several qualities, the ELBO in closed form and by Pyro's ``Trace_ELBO``.
* "Single network (single-sample ensemble) also works": a BNN's accuracy, NLL and cost against
  the number of posterior draws in its predictive.

Everything is fitted with the public API (:func:`bayesdl.fit`, the named models ``coin`` and
``linreg``, :func:`bayesdl.bnn.bayesian`); the closed forms are in
:mod:`bayesdl.reports.lecture_math`.
"""

from __future__ import annotations

import html
import math
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyro.distributions as dist
import torch

import bayesdl
import bayesdl.models.coin as coin
import bayesdl.models.linear_regression as linreg
from bayesdl.fits.run import RUN_FILES
from bayesdl.inference.convergence import ConvergenceWarning
from bayesdl.inference.errors import UserError
from bayesdl.reports import lecture_math as lm
from bayesdl.reports import page as report
from bayesdl.workflows import metrics
from bayesdl.workflows.figures import plt, save

FOLDER = "lecture"
FIT_NS = (10, 100, 1000)  # the collapse section fits coin and linreg at these N
#: the run folders these sections write (coin and linreg fits whose summary.json they read)
RUN_DIRS = (
    *(f"coin-batch-{k}" for k in range(1, 5)),
    "coin-all",
    "coin-elbo",
    "linreg-elbo-full",
    "linreg-elbo-mean-field",
    *(f"linreg-n{n}" for n in FIT_NS),
)
FIGURES = (
    "sequential.png",
    "asymptotics.png",
    "data_per_parameter.png",
    "elbo_kl.png",
    "ensemble.png",
)
PI_TRUE = 0.3  # the simulated coin's P(heads)
BNN_SIZES = (50, 100, 200, 500, 1347)
ENSEMBLE_SIZES = (1, 2, 5, 10, 50)


@dataclass
class Context:
    """What the sections share: ``quick`` (tiny settings, for tests), ``overwrite``, the digits
    BNNs one section fits and the next reuses, and ``record``: each section's key numbers."""

    quick: bool = False
    overwrite: bool = False
    fits: dict[int, Any] = field(default_factory=dict)
    record: dict[str, Any] = field(default_factory=dict)


def refuse_existing(out: Path) -> None:
    """Refuse (before anything is fitted) a tour folder that already holds these runs/figures."""
    folder = Path(out) / FOLDER
    for name in RUN_DIRS:
        run_dir = folder / name
        if run_dir.exists() and (
            not run_dir.is_dir() or any((run_dir / f).exists() for f in RUN_FILES)
        ):
            raise UserError(
                f"tour: {run_dir} already holds a run; choose another --out, or add "
                "--overwrite to replace the tour's runs"
            )
    for name in FIGURES:
        if (folder / name).exists():
            raise UserError(
                f"tour: {folder / name} exists; choose another --out, or add --overwrite"
            )


# -- helpers -----------------------------------------------------------------------------------


def _fit(model: Any, data: Any = None, **options: Any):
    """:func:`bayesdl.fit`, quietly: these short fits are judged by their numbers, not flagged."""
    options.setdefault("progress", False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return bayesdl.fit(model, data, **options)


def _summary(post) -> dict[str, Any]:
    """The run folder's ``summary.json`` (the model's exact-versus-fitted numbers)."""
    from bayesdl.fits.records import read_summary

    return read_summary(Path(post.run_dir))


def _quote(text: str) -> str:
    return f"<blockquote>&ldquo;{html.escape(text)}&rdquo; (lecture)</blockquote>"


def _section(title: str, quote: str, body: str, figure: Path, tables: list[str], t0: float) -> str:
    return "\n".join(
        [
            f"<section><h2>{html.escape(title)}</h2>",
            _quote(quote),
            f"<p>{body}</p>",
            f"<div class=figs>{report.image(figure)}</div>",
            *tables,
            f"<p class=meta>{time.perf_counter() - t0:.1f} s; figure "
            f"<code>{html.escape(str(figure))}</code></p></section>",
        ]
    )


def _flips(n: int, seed: int) -> np.ndarray:
    return (np.random.default_rng(seed).random(n) < PI_TRUE).astype(int)


def _csv(x: np.ndarray) -> str:
    return ",".join(str(int(v)) for v in x)


# -- 3. sequential updating --------------------------------------------------------------------


def sequential_section(out: Path, ctx: Context) -> str:
    """Coin: four batches of ten flips, each fitted with the previous fitted Beta as prior."""
    t0 = time.perf_counter()
    steps = 150 if ctx.quick else 1000
    flips = _flips(40, seed=3)
    batches = np.split(flips, 4)
    counts = [(int(b.sum()), len(b) - int(b.sum())) for b in batches]
    exact = lm.beta_sequential(1.0, 1.0, counts)
    h, t = int(flips.sum()), len(flips) - int(flips.sum())
    at_once = coin.posterior(1.0, 1.0, h, t)
    fit_opts = {"steps": steps, "particles": 16, "overwrite": ctx.overwrite, "seed": 0}
    a, b, fitted = 1.0, 1.0, []
    for k, batch in enumerate(batches, 1):
        post = _fit(
            "coin", flips=_csv(batch), prior_a=a, prior_b=b, out=out / f"coin-batch-{k}", **fit_opts
        )
        f = _summary(post)["fitted"]
        a, b = f["a_q"], f["b_q"]
        fitted.append((a, b))
    f_all = _summary(_fit("coin", flips=_csv(flips), out=out / "coin-all", **fit_opts))["fitted"]
    fitted_all = (f_all["a_q"], f_all["b_q"])

    rows = []
    for k, ((h_k, t_k), (ea, eb), (fa, fb)) in enumerate(zip(counts, exact, fitted, strict=True)):
        em, es = lm.beta_mean_sd(ea, eb)
        fm, fs = lm.beta_mean_sd(fa, fb)
        kl = lm.coin_kl_to_posterior(ea - h_k, eb - t_k, h_k, t_k, fa, fb)  # vs exact Beta(ea, eb)
        rows.append([f"after batch {k + 1}", h_k, t_k, f"Beta({ea:g}, {eb:g})",
                     f"Beta({fa:.2f}, {fb:.2f})", em, fm, es, fs, kl])  # fmt: skip
    em, es = lm.beta_mean_sd(*at_once)
    fm, fs = lm.beta_mean_sd(*fitted_all)
    rows.append(["all 40 flips at once", h, t, f"Beta({at_once[0]:g}, {at_once[1]:g})",
                 f"Beta({fitted_all[0]:.2f}, {fitted_all[1]:.2f})", em, fm, es, fs,
                 lm.coin_kl_to_posterior(1.0, 1.0, h, t, *fitted_all)])  # fmt: skip
    seq_sd = lm.beta_mean_sd(*fitted[-1])
    shift = abs(seq_sd[0] - em) / es  # in exact posterior sds
    ctx.record["sequential"] = {
        "exact": exact,
        "at_once": at_once,
        "fitted": fitted,
        "fitted_at_once": fitted_all,
        "mean_shift_sd": shift,
        "sd_ratio": seq_sd[1] / es,
    }

    fig, ax = plt.subplots(figsize=(6.5, 3.8))
    grid = torch.linspace(1e-3, 1 - 1e-3, 400, dtype=torch.float64)
    ax.plot(grid, torch.ones_like(grid), ":", color="grey", label="prior Beta(1, 1)")
    for k, ((ea, eb), (fa, fb)) in enumerate(zip(exact, fitted, strict=True)):
        ax.plot(grid, dist.Beta(ea, eb).log_prob(grid).exp(), color=f"C{k}", lw=2,
                label=f"after batch {k + 1}: exact Beta({ea:g}, {eb:g})")  # fmt: skip
        ax.plot(grid, dist.Beta(fa, fb).log_prob(grid).exp(), "--", color=f"C{k}", lw=1.5)
    ax.plot(grid, dist.Beta(*fitted_all).log_prob(grid).exp(), "k:", lw=2,
            label="all flips at once, fitted")  # fmt: skip
    ax.axvline(PI_TRUE, color="grey", lw=0.8)
    ax.set_xlabel("pi = P(heads)   (solid: exact, dashed: fitted with the previous fit as prior)")
    ax.set_ylabel("posterior density")
    ax.set_title("coin: sequential updating, 4 batches of 10 flips")
    ax.legend(fontsize=7)
    fig_path = out / FIGURES[0]
    save(fig, out, FIGURES[0])

    body = (
        "Beta(a, b) prior, h heads and t tails: the posterior Beta(a + h, b + t) is the next "
        "batch's prior, so the parameters add up and the end is exactly the posterior of all "
        f"flips at once: Beta({exact[-1][0]:g}, {exact[-1][1]:g}) both ways "
        f"({'identical' if tuple(exact[-1]) == tuple(at_once) else 'NOT identical'}). Fitted: "
        f'each batch by <code>bayesdl.fit("coin", flips=..., prior_a=a_q, prior_b=b_q)</code> '
        f"with the previous fit's Beta guide as prior ({steps} steps each); after four fits "
        f"Beta({fitted[-1][0]:.2f}, {fitted[-1][1]:.2f}), its mean {shift:.2f} exact posterior "
        f"sd from the all-at-once posterior and its sd {seq_sd[1] / es:.3f} times the exact one."
    )
    table = report.table(
        ["posterior", "heads", "tails", "exact", "fitted", "exact mean", "fitted mean",
         "exact sd", "fitted sd", "KL(fitted || exact)"],
        rows,
    )  # fmt: skip
    return _section(
        "Lecture claims: sequential updating (coin)",
        "We now can make predictions about unseen data. And collect some more data to "
        "improve our beliefs",
        body,
        fig_path,
        [table],
        t0,
    )


# -- 4. the posterior collapses into a point ---------------------------------------------------


def _linreg_data(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``x ~ U(-3, 3)^2``, ``theta* = (0.8, -0.5)``, ``y = x theta* + N(0, 1)``."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 2, generator=g, dtype=torch.float64) * 6 - 3
    y = x @ torch.tensor([0.8, -0.5], dtype=torch.float64) + torch.randn(
        n, generator=g, dtype=torch.float64
    )
    return x, y


def linreg_sd(x: torch.Tensor, y: torch.Tensor) -> float:
    """Exact posterior sd of ``theta_0`` (prior N(0, 1), noise sd 1)."""
    _, cov = linreg.posterior(x, y, 0.0, 1.0, 1.0)
    return float(cov[0, 0].sqrt())


def asymptotics_section(out: Path, ctx: Context) -> str:
    """Posterior sd vs N (coin and linreg), predictives converging, over-confidence at small N."""
    t0 = time.perf_counter()
    steps = 150 if ctx.quick else 800
    grid = np.unique(np.round(np.logspace(1, 5, 17)).astype(int))
    fit_ns = FIT_NS[:1] if ctx.quick else FIT_NS
    flips = _flips(int(grid.max()), seed=4)
    heads = np.concatenate([[0], np.cumsum(flips)])
    coin_sd = [lm.beta_mean_sd(1 + heads[n], 1 + n - heads[n])[1] for n in grid]
    x_all, y_all = _linreg_data(int(grid.max()), seed=5)
    lin_sd = [linreg_sd(x_all[:n], y_all[:n]) for n in grid]
    coin_slope, lin_slope = lm.loglog_slope(grid, coin_sd), lm.loglog_slope(grid, lin_sd)

    rows = []
    for n in fit_ns:
        cpost = _fit("coin", flips=_csv(flips[:n]), steps=steps, particles=16, seed=0)
        # linreg's fitted sd from its run folder (Posterior.sample of linreg draws one at a time)
        lpost = _fit("linreg", simulate=n, dim=2, test_fraction=0.0, steps=steps, seed=n,
                     out=out / f"linreg-n{n}", overwrite=ctx.overwrite)  # fmt: skip
        xs, ys = lpost.data["x"].double(), lpost.data["y"].double()
        rows.append([
            n,
            lm.beta_mean_sd(1 + heads[n], 1 + n - heads[n])[1],
            cpost.summary(4000)["pi"]["std"],
            math.sqrt(PI_TRUE * (1 - PI_TRUE) / n),
            linreg_sd(xs, ys),
            _summary(lpost)["fitted"]["std"][0],
            1 / math.sqrt(3 * n),
        ])  # fmt: skip

    prior_a, prior_b = 2.0, 2.0
    predictors = lm.coin_predictors(prior_a, prior_b)
    loss_ns = [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000]
    entropy = lm.bernoulli_entropy(PI_TRUE)
    losses = {k: [lm.coin_expected_log_loss(PI_TRUE, n, p) for n in loss_ns]
              for k, p in predictors.items()}  # fmt: skip
    loss_rows = [
        [n, losses["Bayes"][i][0] - entropy, losses["MAP"][i][0] - entropy,
         losses["MLE"][i][1], losses["MLE"][i][0] - entropy if losses["MLE"][i][1] < 1 else None,
         1 / (2 * n)]
        for i, n in enumerate(loss_ns)
    ]  # fmt: skip

    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    ax = axes[0]
    ax.loglog(grid, coin_sd, "C0-", label=f"coin, exact (slope {coin_slope:.3f})")
    ax.loglog(grid, np.sqrt(PI_TRUE * (1 - PI_TRUE) / grid), "C0:", label="sqrt(pi*(1-pi*)/N)")
    ax.loglog(grid, lin_sd, "C1-", label=f"linreg theta_0, exact (slope {lin_slope:.3f})")
    ax.loglog(grid, 1 / np.sqrt(3 * grid), "C1:", label="sigma / sqrt(N Var x)")
    ax.loglog([r[0] for r in rows], [r[2] for r in rows], "C0o", label="coin, fitted Beta guide")
    ax.loglog([r[0] for r in rows], [r[5] for r in rows], "C1s", label="linreg, fitted guide")
    ax.set_xlabel("N")
    ax.set_ylabel("posterior sd")
    ax.set_title("the posterior collapses at the 1/sqrt(N) rate")
    ax.legend(fontsize=7)
    ax = axes[1]
    seq = np.unique(np.round(np.logspace(0, 4, 60)).astype(int))
    for k, p in predictors.items():
        ax.semilogx(seq, [p(int(heads[n]), int(n - heads[n])) for n in seq], label=k)
    ax.axhline(PI_TRUE, color="grey", ls=":", label="pi*")
    ax.set_xlabel("N flips seen")
    ax.set_ylabel("P(next = heads)")
    ax.set_title(f"predictives converge (prior Beta({prior_a:g}, {prior_b:g}))")
    ax.legend(fontsize=7)
    ax = axes[2]
    ax.loglog(loss_ns, [r[1] for r in loss_rows], "C0-o", label="Bayes")
    ax.loglog(loss_ns, [r[2] for r in loss_rows], "C1-s", label="MAP")
    mle = [(n, r[4]) for n, r in zip(loss_ns, loss_rows, strict=True) if r[4] is not None]
    ax.loglog(*zip(*mle, strict=True), "C2-^", label="MLE, when finite")
    ax.loglog(loss_ns, [1 / (2 * n) for n in loss_ns], "k:", label="1 / (2N)")
    ax.set_xlabel("N")
    ax.set_ylabel("expected log loss - H(pi*)  (nats)")
    ax.set_title("next-flip log loss in excess of the truth's")
    ax.legend(fontsize=7)
    fig_path = out / FIGURES[1]
    save(fig, out, FIGURES[1])

    i10 = loss_ns.index(10)
    off = [f"{model} at N = {r[0]} ({r[j]:.3g} vs {r[j - 1]:.3g})"
           for r in rows for model, j in (("coin", 2), ("linreg", 5))
           if abs(r[j] / r[j - 1] - 1) > 0.1]  # fmt: skip
    ctx.record["collapse"] = {
        "coin_slope": coin_slope,
        "linreg_slope": lin_slope,
        "fits": rows,
        "log_loss": loss_rows,
    }
    body = (
        f"Coin with pi* = {PI_TRUE} (prior Beta(1, 1)) and linear regression (2 inputs, "
        "x ~ U(-3, 3), prior N(0, I), noise sd 1) on growing data: the exact posterior sd falls "
        f"with log-log slope {coin_slope:.3f} (coin) and {lin_slope:.3f} (linreg) against "
        "-1/2, onto sqrt(pi*(1 - pi*)/N) and sigma/sqrt(N Var x). The fitted guides "
        f"(<code>bayesdl.fit</code>, {steps} steps, started wide) match the exact sd within 10 % "
        + (
            f"except {', '.join(off)}: there the guide has not yet shrunk onto the sharp "
            "posterior in that many steps (SVI's slow direction, not the claim's). "
            if off
            else "at every N fitted. "
        )
        + "With prior Beta(2, 2) the Bayes, MAP "
        "and MLE predictives converge to pi*. Averaged exactly over all datasets of N flips, the "
        f"excess log loss of the next flip at N = 10 is {loss_rows[i10][1]:.4f} nats (Bayes), "
        f"{loss_rows[i10][2]:.4f} (MAP); the MLE predicts a sure outcome with probability "
        f"{losses['MLE'][i10][1]:.3f} (an infinite loss) and {loss_rows[i10][4]:.4f} otherwise; "
        "all tend to 0 like 1/(2N)."
    )
    t1 = report.table(
        ["N", "coin exact sd", "coin fitted sd", "sqrt(pi*(1-pi*)/N)", "linreg exact sd theta_0",
         "linreg fitted sd theta_0", "1/sqrt(3N)"],
        rows + [["log-log slope (exact, N = 10..1e5)", coin_slope, None, -0.5, lin_slope, None,
                 -0.5]],
    )  # fmt: skip
    t2 = report.table(
        ["N", "Bayes excess log loss", "MAP excess log loss", "MLE: P(infinite loss)",
         "MLE excess log loss when finite", "1/(2N)"],
        loss_rows,
    )  # fmt: skip
    return _section(
        "Lecture claims: with infinite data the posterior collapses into a point",
        "In most cases in the limit of infinite data the true posterior p(theta | D) collapses "
        "into a point ... [the MLE predictive is] overconfident compared to the full Bayesian "
        "but the same in the limit of infinite data",
        body,
        fig_path,
        [t1, t2],
        t0,
    )


# -- 5. data per parameter ---------------------------------------------------------------------


def _digits_net() -> torch.nn.Module:
    from torch import nn

    return nn.Sequential(nn.Linear(64, 100), nn.ReLU(), nn.Linear(100, 10))


def fit_digits(n: int, guide: str, steps: int, seed: int = 0):
    """The 64-100-10 network on the first ``n`` training digits, made Bayesian by
    :func:`bayesdl.bnn.bayesian` with ``guide`` (``meanfield``, ``map``, ``mle``)."""
    import bayesdl.bnn as bnn
    from bayesdl.datasets.bundled import digits

    split = digits()
    torch.manual_seed(seed)
    bnet = bnn.bayesian(_digits_net(), likelihood="categorical", guide=guide)
    data = {"x": split.x_train[:n], "y": split.y_train[:n]}
    post = _fit(bnet, data, steps=steps, lr=1e-2, batch_size=min(n, 128), seed=seed)
    return post, split


def _scores(post, split, samples: int) -> tuple[float, float]:
    p = post.predict({"x": split.x_test}, num_samples=samples)["f"].softmax(-1)
    return metrics.accuracy(p, split.y_test), metrics.nll(p, split.y_test)


def data_per_parameter_section(out: Path, ctx: Context) -> str:
    """BNN vs MAP vs MLE of the same network on 50 ... 1347 training digits."""
    t0 = time.perf_counter()
    quick = ctx.quick
    sizes = (50, 200) if quick else BNN_SIZES
    steps = {"meanfield": 20 if quick else 600, "map": 20 if quick else 500,
             "mle": 20 if quick else 500}  # fmt: skip
    n_params = sum(p.numel() for p in _digits_net().parameters())
    res: dict[str, list[tuple[float, float]]] = {g: [] for g in steps}
    split = None
    for n in sizes:
        for guide in steps:
            post, split = fit_digits(n, guide, steps[guide])
            res[guide].append(_scores(post, split, 50 if guide == "meanfield" else 1))
            if guide == "meanfield":
                ctx.fits[n] = post
    rows = [
        [n, n / n_params, *(res[g][i][0] for g in steps), *(res[g][i][1] for g in steps)]
        for i, n in enumerate(sizes)
    ]
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    names = {"meanfield": "BNN (mean field, 50 draws)", "map": "MAP", "mle": "MLE"}
    for j, (ax, what) in enumerate(zip(axes, ("test accuracy", "test NLL (nats)"), strict=True)):
        for g in steps:
            ax.semilogx(sizes, [r[j] for r in res[g]], "-o", label=names[g])
        ax.set_xlabel(f"training digits N  ({n_params} parameters)")
        ax.set_ylabel(what)
        sec = ax.secondary_xaxis("top", functions=(lambda v: v / n_params, lambda v: v * n_params))
        sec.set_xlabel("data per parameter N / P")
        ax.legend(fontsize=7)
    fig.suptitle("8x8 digits, 64-100-10 network: the same net three ways", fontsize=10)
    fig_path = out / FIGURES[2]
    save(fig, out, FIGURES[2])

    first, last = rows[0], rows[-1]
    ctx.record["data_per_parameter"] = rows
    gap = lambda r: max(r[5:8]) - min(r[5:8])  # noqa: E731
    best = lambda r: names[list(steps)[int(np.argmin(r[5:8]))]]  # noqa: E731
    body = (
        f"The same 64-100-10 network ({n_params} parameters) fitted to the first N of the "
        "1347 training digits by <code>bayesdl.fit(bayesdl.bnn.bayesian(net, "
        'likelihood="categorical", guide=...), ...)</code>: mean-field BNN, MAP and MLE '
        f"(prior N(0, 10^2 / fan_in); {steps['meanfield']} and {steps['map']} steps); test on "
        f"the 450 held-out digits. At N = {first[0]} ({first[1]:.4f} points per parameter) the "
        f"test NLL spans {gap(first):.3f} nats between the three (best: {best(first)}); at "
        f"N = {last[0]} ({last[1]:.3f} per parameter) {gap(last):.3f} nats (best: "
        f"{best(last)}). Every N here is far below one datum per parameter. Mean-field VI with "
        "the full KL term tends to under-fit small data (Foong et al. 2019); where it loses to "
        "MAP the table says so."
    )
    table = report.table(
        ["N", "N / P", "accuracy BNN", "accuracy MAP", "accuracy MLE", "NLL BNN", "NLL MAP",
         "NLL MLE"],
        rows,
    )  # fmt: skip
    return _section(
        "Lecture claims: data per parameter (digits BNN vs MAP vs MLE)",
        "However, its not the amount of data itself that matters, but how much data per "
        "parameter we have",
        body,
        fig_path,
        [table],
        t0,
    )


# -- 6. KL = log p(D) - ELBO -------------------------------------------------------------------


def _kl_row(name: str, log_p: float, closed: float, mc: tuple[float, float], kl: float) -> list:
    gap = log_p - mc[0]
    return [name, log_p, closed, f"{mc[0]:.4f} ± {mc[1]:.4f}", kl, log_p - closed, gap,
            (gap - kl) / mc[1] if mc[1] > 1e-9 else 0.0]  # fmt: skip


def elbo_kl_section(out: Path, ctx: Context) -> str:
    """Coin and linreg: log p(D), ELBO (closed form and Monte Carlo) and exact KL, per guide."""
    t0 = time.perf_counter()
    overwrite = ctx.overwrite
    steps = 100 if ctx.quick else 1000
    particles, repeats = (250, 20) if ctx.quick else (400, 50)
    f64 = torch.float64
    # coin: 7 heads, 13 tails, uniform prior
    h, t = 7, 13
    cpost = _fit("coin", heads=h, tails=t, steps=steps, particles=16, seed=0,
                 out=out / "coin-elbo", overwrite=overwrite)  # fmt: skip
    fc = _summary(cpost)["fitted"]
    pa, pb = coin.posterior(1.0, 1.0, h, t)
    coin_guides = [
        ("exact posterior", pa, pb),
        ("fitted Beta guide", fc["a_q"], fc["b_q"]),
        ("right mean, 10x too narrow", 10 * pa, 10 * pb),
        ("mirrored", pb, pa),
        ("the prior Beta(1, 1)", 1.0, 1.0),
    ]
    coin_log_p = coin.log_evidence(1.0, 1.0, h, t)
    data = {"flips": torch.cat([torch.ones(h, dtype=f64), torch.zeros(t, dtype=f64)]),
            "prior_a": 1.0, "prior_b": 1.0, "mle": False}  # fmt: skip
    coin_rows = []
    for name, a_q, b_q in coin_guides:
        q = dist.Beta(torch.tensor(a_q, dtype=f64), torch.tensor(b_q, dtype=f64))
        mc = lm.mc_elbo(coin.model, lm.fixed_guide("pi", q), data, particles, repeats)
        coin_rows.append(_kl_row(f"{name}: Beta({a_q:.2f}, {b_q:.2f})", coin_log_p,
                                 lm.coin_elbo(1.0, 1.0, h, t, a_q, b_q), mc,
                                 lm.coin_kl_to_posterior(1.0, 1.0, h, t, a_q, b_q)))  # fmt: skip

    # linreg: the diabetes data (10 correlated inputs), prior N(0, I), noise sd 1
    lin = {}
    for guide, run in (("full-covariance", "full"), ("mean-field", "mean-field")):
        post = _fit("linreg", guide=guide, steps=steps, seed=0, overwrite=overwrite,
                    out=out / f"linreg-elbo-{run}")  # fmt: skip
        lin[guide] = (post, _summary(post))
    post = lin["full-covariance"][0]
    x, y = post.data["x"].double(), post.data["y"].double()
    mu, cov = linreg.posterior(x, y, 0.0, 1.0, 1.0)
    d = mu.numel()
    lin_guides = [
        ("exact posterior", mu, cov),
        *((f"fitted {g} guide", torch.tensor(s["fitted"]["mean"], dtype=f64),
           torch.tensor(s["fitted"]["cov"], dtype=f64)) for g, (_, s) in lin.items()),
        ("best mean-field: N(mu_N, diag 1/Lambda_kk)", mu,
         torch.diag(linreg.mean_field_optimum_variance(cov))),
        ("the prior N(0, I)", torch.zeros(d, dtype=f64), torch.eye(d, dtype=f64)),
    ]  # fmt: skip
    lin_log_p = lm.linreg_log_evidence(x, y, 0.0, 1.0, 1.0)
    lin_data = {"x": x, "y": y, "prior_loc": 0.0, "prior_scale": 1.0, "noise_scale": 1.0}
    lin_rows = []
    for name, m, s in lin_guides:
        q = dist.MultivariateNormal(m, s)
        mc = lm.mc_elbo(linreg.model, lm.fixed_guide("theta", q), lin_data, particles, repeats)
        lin_rows.append(_kl_row(name, lin_log_p, lm.linreg_elbo(x, y, m, s, 0.0, 1.0, 1.0), mc,
                                lm.linreg_kl_to_posterior(m, s, mu, cov)))  # fmt: skip

    fig, axes = plt.subplots(1, 2, figsize=(12, 4))
    panels = [(coin_rows, f"coin, {h} heads {t} tails"),
              (lin_rows, f"linreg, diabetes (n = {len(y)}, d = {d})")]  # fmt: skip
    for ax, (rows, title) in zip(axes, panels, strict=True):
        i = np.arange(len(rows))
        ax.bar(i - 0.2, [r[4] for r in rows], 0.4, label="KL(q || p(theta | D)), exact")
        ax.bar(i + 0.2, [r[6] for r in rows], 0.4, color="C1",
               yerr=[2 * float(r[3].split("± ")[1]) for r in rows], capsize=3,
               label="log p(D) - ELBO (Monte Carlo, +-2 se)")  # fmt: skip
        ax.set_yscale("symlog", linthresh=1e-2)
        ax.set_xticks(i, [r[0].split(":")[0] for r in rows], rotation=20, ha="right", fontsize=7)
        ax.set_ylabel("nats")
        ax.set_title(title)
        ax.legend(fontsize=7)
    fig_path = out / FIGURES[3]
    save(fig, out, FIGURES[3])

    worst = max(abs(r[7]) for r in coin_rows + lin_rows)
    ctx.record["elbo_kl"] = {"coin": coin_rows, "linreg": lin_rows}
    body = (
        f"For each guide q: the exact log evidence (coin {coin_log_p:.4f}, linreg "
        f"{lin_log_p:.4f}), the ELBO in closed form and by Pyro's <code>Trace_ELBO</code> "
        f"({repeats} repeats of {particles} vectorized particles, mean ± standard error), and the "
        "exact KL to the posterior. log p(D) - ELBO equals the KL to rounding in closed form, "
        f"and within {worst:.2f} standard errors by Monte Carlo (column z). The exact posterior "
        "gives the same value log p(D) for every draw: its ELBO has no variance. Fitted guides: "
        f'<code>bayesdl.fit("coin", heads={h}, tails={t})</code> and '
        '<code>bayesdl.fit("linreg", guide="full-covariance" | "mean-field")</code>, '
        f"{steps} steps; the mean-field family cannot get below the KL of its best member."
    )
    headers = ["guide q", "log p(D)", "ELBO closed form", "ELBO Monte Carlo", "KL exact",
               "log p(D) - ELBO (closed)", "log p(D) - ELBO (MC)",
               "z = (gap - KL) / se"]  # fmt: skip
    return _section(
        "Lecture claims: KL(q || p(theta | D)) = log p(D) - ELBO",
        "KL(q(theta | Lambda) || p(theta | D)) = log p(D) - "
        "E_q log p(D, theta) / q(theta | Lambda)",
        body,
        fig_path,
        ["<h3>coin (Beta-Bernoulli)</h3>", report.table(headers, coin_rows),
         "<h3>linear regression (Gaussian, known noise)</h3>", report.table(headers, lin_rows)],
        t0,
    )  # fmt: skip


# -- 9. a single network also works ------------------------------------------------------------


def ensemble_section(out: Path, ctx: Context) -> str:
    """Accuracy, NLL and cost of the BNN predictive against the number of posterior draws."""
    import bayesdl.bnn as bnn

    t0 = time.perf_counter()
    n = max(ctx.fits, default=max(BNN_SIZES))  # the BNN on the most digits
    post = ctx.fits.get(n)
    split = None
    if post is None:
        post, split = fit_digits(n, "meanfield", 20 if ctx.quick else 600)
    if split is None:
        from bayesdl.datasets.bundled import digits

        split = digits()
    repeats = 2 if ctx.quick else 10
    rows, stats = [], {}
    for m in ENSEMBLE_SIZES:
        acc, nll, ms = [], [], []
        for _ in range(repeats):
            start = time.perf_counter()
            f = post.predict({"x": split.x_test}, num_samples=m)["f"]
            ms.append(1000 * (time.perf_counter() - start))
            p = f.softmax(-1)
            acc.append(metrics.accuracy(p, split.y_test))
            nll.append(metrics.nll(p, split.y_test))
        stats[m] = (np.mean(acc), np.std(acc), np.mean(nll), np.std(nll), np.median(ms))
        rows.append([f"{m} draw{'s' if m > 1 else ''}", *stats[m]])
    net = bnn.mean_net(post)
    with torch.no_grad():
        start = time.perf_counter()
        for _ in range(repeats):
            logits = net(split.x_test)
        mean_ms = 1000 * (time.perf_counter() - start) / repeats
    p = logits.softmax(-1)
    mean_acc, mean_nll = metrics.accuracy(p, split.y_test), metrics.nll(p, split.y_test)
    rows.append(["mean network (posterior means, one pass)", mean_acc, 0.0, mean_nll, 0.0,
                 mean_ms])  # fmt: skip

    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    ms_ = list(ENSEMBLE_SIZES)
    for ax, (j, what) in zip(axes, ((0, "test accuracy"), (2, "test NLL (nats)"),
                                    (4, "ms per predict (450 digits)")), strict=True):  # fmt: skip
        vals = [stats[m][j] for m in ms_]
        err = [stats[m][j + 1] for m in ms_] if j < 4 else None
        ax.errorbar(ms_, vals, yerr=err, fmt="-o", capsize=3, label="BNN, M posterior draws")
        ref = (mean_acc, None, mean_nll, None, mean_ms)[j]
        ax.axhline(ref, color="C3", ls="--", label="mean network")
        ax.set_xscale("log")
        ax.set_xlabel("M (draws in the predictive)")
        ax.set_ylabel(what)
        ax.legend(fontsize=7)
    fig.suptitle(f"mean-field BNN on {n} digits: ensemble size vs quality and cost", fontsize=10)
    fig_path = out / FIGURES[4]
    save(fig, out, FIGURES[4])
    s1, s50 = stats[1], stats[max(ENSEMBLE_SIZES)]
    ctx.record["ensemble"] = {"stats": stats, "mean_network": (mean_acc, mean_nll, mean_ms)}
    body = (
        f"One mean-field BNN (64-100-10, fitted on {n} training digits) predicts the 450 "
        'test digits with <code>post.predict({"x": x}, num_samples=M)</code>, '
        f"{repeats} times per M (mean ± sd over repeats; time: median). One draw: accuracy "
        f"{s1[0]:.3f}, NLL {s1[2]:.3f}, {s1[4]:.1f} ms; {max(ENSEMBLE_SIZES)} draws: "
        f"{s50[0]:.3f}, {s50[2]:.3f}, {s50[4]:.1f} ms ({s50[4] / s1[4]:.1f} times the cost). "
        f"The network at the posterior means (<code>bayesdl.bnn.mean_net(post)</code>), one "
        f"plain forward pass: {mean_acc:.3f}, {mean_nll:.3f}, {mean_ms:.2f} ms. "
        + (
            "A single network works here: the mean network is at least as good as the "
            f"{max(ENSEMBLE_SIZES)}-draw ensemble at a fraction of its cost; a single random "
            f"draw scores accuracy {s1[0]:.3f} against the ensemble's {s50[0]:.3f}."
            if mean_nll <= s50[2]
            else f"Here the {max(ENSEMBLE_SIZES)}-draw ensemble beats the mean network's NLL."
        )
    )
    table = report.table(["predictive", "accuracy", "sd", "NLL", "sd", "ms (median)"], rows)
    return _section(
        "Lecture claims: a single network also works (BNN ensemble size)",
        "Actually using the ensemble is costly: k times slow for an ensemble of k models. "
        "Single network (single-sample ensemble) also work",
        body,
        fig_path,
        [table],
        t0,
    )


def sections(
    out: Path,
    overwrite: bool = False,
    progress: bool = False,
    quick: bool = False,
    record: dict[str, Any] | None = None,
) -> list[str]:
    """The five lecture-claim sections, runs and figures in ``out/lecture``; ``quick``: tiny
    settings (tests); ``record``: filled with each section's key numbers."""
    out = Path(out) / FOLDER
    out.mkdir(parents=True, exist_ok=True)
    ctx = Context(quick=quick, overwrite=overwrite, record={} if record is None else record)
    steps = [
        ("sequential updating", sequential_section),
        ("posterior collapse", asymptotics_section),
        ("data per parameter", data_per_parameter_section),
        ("KL = log p(D) - ELBO", elbo_kl_section),
        ("single network", ensemble_section),
    ]
    html_parts = []
    for name, make in steps:
        print(f"[tour] lecture claims: {name}", file=sys.stderr, flush=True)
        html_parts.append(make(out, ctx))
    return html_parts
