"""The tour's section on sequential updating (coin): four batches of ten flips, each fitted with
the previous fitted Beta as prior. With a Beta(a, b) prior the posterior after h heads and t tails
is Beta(a + h, b + t), so the end of the chain is exactly the posterior of all flips at once;
the fits get there within fitting noise."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import pyro.distributions as dist
import torch

import bayesdl.models.coin as coin
from bayesdl.reports import lecture_math as lm
from bayesdl.reports import page as report
from bayesdl.reports.lecture_kit import (
    PI_TRUE,
    Context,
    csv,
    quiet_fit,
    section,
    simulated_flips,
    summary_of,
)
from bayesdl.workflows.figures import plt, save

FIGURE = "sequential.png"
RUN_DIRS = (*(f"coin-batch-{k}" for k in range(1, 5)), "coin-all")


def fit_batches(out: Path, ctx: Context, steps: int) -> dict[str, Any]:
    """The exact chain of posteriors, the fitted chain (each batch's prior the previous fit's
    Beta guide) and the fit of all flips at once."""
    flips = simulated_flips(40, seed=3)
    batches = np.split(flips, 4)
    counts = [(int(b.sum()), len(b) - int(b.sum())) for b in batches]
    exact = lm.beta_sequential(1.0, 1.0, counts)
    h, t = int(flips.sum()), len(flips) - int(flips.sum())
    at_once = coin.posterior(1.0, 1.0, h, t)
    fit_opts = {"steps": steps, "particles": 16, "overwrite": ctx.overwrite, "seed": 0}
    a, b, fitted = 1.0, 1.0, []
    for k, batch in enumerate(batches, 1):
        post = quiet_fit(
            "coin", flips=csv(batch), prior_a=a, prior_b=b, out=out / f"coin-batch-{k}", **fit_opts
        )
        f = summary_of(post)["fitted"]
        a, b = f["a_q"], f["b_q"]
        fitted.append((a, b))
    f_all = summary_of(quiet_fit("coin", flips=csv(flips), out=out / "coin-all", **fit_opts))
    fitted_all = (f_all["fitted"]["a_q"], f_all["fitted"]["b_q"])
    return {"counts": counts, "exact": exact, "h": h, "t": t, "at_once": at_once,
            "fitted": fitted, "fitted_all": fitted_all}  # fmt: skip


def table_rows(r: dict[str, Any]) -> list[list]:
    """One row per batch and one for all flips at once: exact and fitted Beta, moments, KL."""
    counts, exact, fitted, at_once = r["counts"], r["exact"], r["fitted"], r["at_once"]
    fitted_all, h, t = r["fitted_all"], r["h"], r["t"]
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
    return rows


def draw(out: Path, exact: list, fitted: list, fitted_all: tuple) -> Path:
    """The exact (solid) and fitted (dashed) posterior after each batch, and the fit at once."""
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
    save(fig, out, FIGURE)
    return out / FIGURE


def sequential_section(out: Path, ctx: Context) -> str:
    """Coin: four batches of ten flips, each fitted with the previous fitted Beta as prior."""
    t0 = time.perf_counter()
    steps = 150 if ctx.quick else 1000
    r = fit_batches(out, ctx, steps)
    exact, fitted, at_once, fitted_all = r["exact"], r["fitted"], r["at_once"], r["fitted_all"]
    rows = table_rows(r)
    em, es = lm.beta_mean_sd(*at_once)
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
    fig_path = draw(out, exact, fitted, fitted_all)
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
    return section(
        "Lecture claims: sequential updating (coin)",
        "We now can make predictions about unseen data. And collect some more data to "
        "improve our beliefs",
        body,
        fig_path,
        [table],
        t0,
    )
