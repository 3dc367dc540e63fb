"""The tour's sections on three more claims of the lecture (``bayesdl tour``).

* VAE, "Monte Carlo doesn't help much": ``log p(x) = log E_{p(z)} p(x | z)`` estimated by plain
  Monte Carlo from the prior against importance sampling from ``q(z | x)``, against ``K``.
* REINFORCE against the reparameterization trick: the variance of the gradient estimate
  (:mod:`bayesdl.inference.diagnostics`) against the number of samples, with Pyro's baselines.
* Stochastic depth, "obtain a sample from (or the mode of) the posterior p(y, z | x)": the
  test-time depth rules of :mod:`bayesdl.workflows.stochastic_depth` and the posterior over
  ``z`` of an easy and a hard digit.

Each section fits what it needs (a short fit, through :func:`~bayesdl.fits.run.fit_run`,
the engine of ``bayesdl fit``), draws one figure into ``out/tour_models`` and returns its HTML: the
figure, a table of the numbers and the lecture's sentence.
"""

from __future__ import annotations

import html
import math
import shlex
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pyro
import pyro.distributions as dist
import torch
from torch.distributions import kl_divergence

from bayesdl.fits.run import Run, fit_run
from bayesdl.inference.diagnostics import gradient_draws
from bayesdl.inference.errors import UserError
from bayesdl.inference.estimators import Estimator, ScoreFunction, make_estimator
from bayesdl.inference.importance import log_weights
from bayesdl.reports import page as report
from bayesdl.reports import verdict
from bayesdl.workflows.base import start
from bayesdl.workflows.figures import plt, save
from bayesdl.workflows.fit_options import from_keywords
from bayesdl.workflows.registry import REGISTRY

#: the figures of the three sections, in ``out/tour_models``
FIGURES = ("claim_vae_mc.png", "claim_gradient_variance.png", "claim_stochastic_depth.png")
#: numbers of samples K of the log p(x) estimates (each divides the largest)
VAE_K = (1, 10, 100, 1000, 5000)
#: numbers of samples S per gradient estimate
GRAD_S = (1, 8, 64)


def refuse_existing(out: Path) -> None:
    """Refuse (before anything is fitted) a tour folder whose ``tour_models`` figures exist."""
    for name in FIGURES:
        path = Path(out) / "tour_models" / name
        if path.exists():
            raise UserError(
                f"tour: {path} already exists; choose another --out, or add --overwrite to "
                "replace the tour's runs"
            )


def _fit(model: str, argv: list[str], options: dict) -> Run:
    """A short fit of a registered model (no run folder), announced as the tour does."""
    print(f"[tour] {model} {shlex.join(argv)}", file=sys.stderr, flush=True)
    w = REGISTRY[model]
    return fit_run(w, from_keywords(w, **options), None, progress=False)


def _meta(command: str, seconds: float) -> str:
    return (
        f"<p class=meta>fit: <code>{html.escape(command)}</code>; section {seconds:.1f} s</p>"
        "</section>"
    )


# -- 7. VAE: plain Monte Carlo from the prior vs importance sampling ---------------------------
def prior_guide(latent_dim: int):
    """A guide that samples ``z ~ p(z) = N(0, I)``: its log weights are ``log p(x | z)``."""

    def guide(x: torch.Tensor) -> None:
        with pyro.plate("data", x.shape[0]):
            z0 = dist.Normal(x.new_zeros(()), x.new_ones(()), validate_args=False)
            pyro.sample("z", z0.expand([x.shape[0], latent_dim]).to_event(1))

    return guide


def log_px_curve(
    model, guide, x: torch.Tensor, ks: tuple[int, ...] = VAE_K, chunk: int = 500
) -> dict[int, torch.Tensor]:
    """``L_K(x_n) = log 1/K sum_k w_nk`` per datum for every ``K`` in ``ks``, from one set of
    ``max(ks)`` log weights (:func:`~bayesdl.inference.importance.log_weights`) cut into
    ``max(ks) / K`` disjoint groups whose ``L_K`` are averaged (the mean is unbiased for
    ``E L_K``, with less noise than one group)."""
    k_max = max(ks)
    if any(k_max % k for k in ks):
        raise ValueError(f"every K must divide the largest, got {ks}")
    lw = torch.cat(
        [log_weights(model, guide, {"x": x}, min(chunk, k_max - s)) for s in range(0, k_max, chunk)]
    )  # (k_max, N)
    return {k: (lw.reshape(k_max // k, k, -1).logsumexp(1) - math.log(k)).mean(0) for k in ks}


def vae_numbers(problem, x: torch.Tensor, ks: tuple[int, ...]) -> tuple[list[list], dict]:
    """Per K: plain Monte Carlo from p(z) and importance sampling from q(z | x) (means over the
    digits ``x`` and their standard errors, the paired gap) and the mean KL(q(z|x) || p(z))."""
    with problem.scope(), torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        mc = log_px_curve(problem.model, prior_guide(8), x, ks)
        iw = log_px_curve(problem.model, problem.guide, x, ks)
        loc, scale = problem.guide.encoder(x)
        kl = kl_divergence(dist.Normal(loc, scale), dist.Normal(0.0, 1.0)).sum(-1)
    se = lambda v: (v.std() / math.sqrt(len(v))).item()  # noqa: E731
    rows, numbers = [], {"K": list(ks), "mc": [], "iw": [], "mc_se": [], "iw_se": [], "gap": []}
    for k in ks:
        gap = iw[k] - mc[k]
        rows.append([k, mc[k].mean().item(), se(mc[k]), iw[k].mean().item(), se(iw[k]),
                     gap.mean().item(), se(gap)])  # fmt: skip
        for key, v in (("mc", mc[k]), ("iw", iw[k]), ("gap", gap)):
            numbers[key].append(v.mean().item())
            if key != "gap":
                numbers[key + "_se"].append(se(v))
    numbers["gap_se"] = [r[-1] for r in rows]
    numbers["kl"] = kl.mean().item()
    return rows, numbers


def draw_vae(out: Path, ks: tuple[int, ...], numbers: dict, x: torch.Tensor) -> None:
    """The two estimates against K, and their gap beside K = exp(KL)."""
    fig, (ax, ax_gap) = plt.subplots(1, 2, figsize=(10, 3.8))
    for key, label, color in (
        ("mc", "plain MC: log mean p(x | z_k), z_k ~ p(z)", "C3"),
        ("iw", "importance sampling: z_k ~ q(z | x)", "C0"),
    ):
        ax.errorbar(ks, numbers[key], yerr=numbers[key + "_se"], marker="o", capsize=3,
                    color=color, label=label)  # fmt: skip
    ax.set_xscale("log")
    ax.set_xlabel("samples K per digit")
    ax.set_ylabel("estimate of log p(x), nats (mean over digits)")
    ax.set_title(f"VAE on 8x8 digits ({len(x)} test digits, latent 8)", fontsize=9)
    ax.legend(fontsize=8)
    ax_gap.errorbar(ks, numbers["gap"], yerr=numbers["gap_se"], marker="o", capsize=3, color="k")
    ax_gap.axvline(math.exp(numbers["kl"]), color="0.5", ls="--", lw=1,
                   label=f"K = exp(KL(q || p)), KL = {numbers['kl']:.1f} nats")  # fmt: skip
    ax_gap.set_xscale("log")
    ax_gap.set_yscale("symlog", linthresh=0.1)
    ax_gap.set_ylim(bottom=0)
    ax_gap.set_xlabel("samples K per digit")
    ax_gap.set_ylabel("importance sampling - plain MC, nats")
    ax_gap.set_title("what the prior's samples miss (paired s.e.)", fontsize=9)
    ax_gap.legend(fontsize=8)
    save(fig, out, FIGURES[0])


def vae_section(out: Path, quick: bool = False) -> tuple[str, dict]:
    """log p(x) of a fitted VAE by Monte Carlo from p(z) and by importance sampling from
    q(z | x), against K; returns the HTML (its verdict in ``numbers["verdict"]``) and the
    numbers."""
    t0 = time.perf_counter()
    steps, n_test, ks = (150, 20, VAE_K[:4]) if quick else (1000, 100, VAE_K)
    options = {"steps": steps, "lr": 3e-3, "latent_dim": 8}
    argv = ["--steps", str(steps), "--lr", "3e-3", "--latent-dim", "8"]
    run = _fit("vae", argv, options)
    problem = run.problem
    x = problem.extra["x_test"][:n_test]
    rows, numbers = vae_numbers(problem, x, ks)
    # the fewest prior samples whose estimate comes within 0.1 nats of importance sampling's K = 1
    match = next((k for k in ks if numbers["mc"][ks.index(k)] >= numbers["iw"][0] - 0.1), None)
    draw_vae(out, ks, numbers, x)
    # the claim, in paired standard errors: at K = 1 importance sampling is above plain MC
    z = [
        g / se if se > 0 else math.inf
        for g, se in zip(numbers["gap"], numbers["gap_se"], strict=True)
    ]
    agrees, agreement = verdict.within(
        [(f"(IS - MC) / s.e. at K = {ks[0]}", z[0], 2.0, math.inf)],
        "claim checks hold (importance sampling above plain MC by > 2 paired s.e.)",
    )
    numbers["verdict"] = verdict.runs_verdict([("vae", run.summary)], agrees, agreement)
    claim = (
        f"at K = 1 plain Monte Carlo is {numbers['gap'][0]:.1f} +- {numbers['gap_se'][0]:.1f} "
        f"nats below importance sampling ({numbers['iw'][0]:.2f} nats), and "
        + (
            f"it takes K = {match} prior samples to come within 0.1 nats of what one sample "
            f"from q(z | x) gives ({numbers['mc'][ks.index(match)]:.2f})"
            if match
            else f"even K = {ks[-1]} prior samples stay further than 0.1 nats below it"
        )
    )
    parts = [
        "<section><h2>vae: &ldquo;Monte Carlo doesn't help much&rdquo;</h2>",
        "<p>The lecture: <i>&ldquo;Intractable integral log p(x) = log &int; p(x|z) p(z) dz. "
        "Monte Carlo doesn't help much.&rdquo;</i> Here log p(x) of a VAE fitted to the 8x8 "
        "digits is estimated by plain Monte Carlo from the prior, log 1/K &sum; p(x | z_k) with "
        "z_k ~ p(z), and by importance sampling from the encoder, log 1/K &sum; p(x, z_k) / "
        "q(z_k | x) with z_k ~ q(z | x) (Burda et al. 2016). Both are lower bounds in "
        "expectation that rise to log p(x) as K grows; only few prior samples land where "
        f"p(x | z) is large: {html.escape(claim)}. The prior needs about e^KL samples, "
        f"KL(q(z|x) || p(z)) = {numbers['kl']:.1f} nats here (small data: on MNIST it is ~25 "
        "nats, far beyond any K). Standard errors are over digits; the gap's is paired.</p>",
        report.table(
            [
                "K",
                "plain MC mean",
                "s.e.",
                "importance sampling mean",
                "s.e.",
                "gap (IS - MC)",
                "gap s.e.",
            ],
            rows,
        ),  # fmt: skip
        f"<div class='figs wide'>{report.image(out / FIGURES[0])}</div>",
        _meta(f"bayesdl fit vae {shlex.join(argv)}", time.perf_counter() - t0),
    ]
    return "\n".join(parts), numbers


# -- 8. REINFORCE vs the reparameterization trick ----------------------------------------------
def estimators(particles: int, elbo: float) -> dict[str, Estimator]:
    """The gradient estimators compared, each averaging ``particles`` samples: pathwise, and the
    score function with each of Pyro's constant baselines (none; a decaying average of the
    cost, beta 0.9, as in Pyro's SVI tutorial part III; the fixed value ``elbo``, the best
    constant: ``E_q[log p - log q]``)."""

    def score(baseline: dict):
        return replace(
            make_estimator("score", particles, max_plate_nesting=1),
            wrap_guide=lambda g: ScoreFunction(baseline=baseline)(g),
        )

    return {
        "reparameterization": make_estimator("reparam", particles, max_plate_nesting=1),
        "score, no baseline": score({}),
        "score, decaying-average baseline": make_estimator("score", particles, max_plate_nesting=1),
        # Pyro wants the value in the shape of the cost: one per vectorized particle
        "score, baseline = ELBO (fixed value)": score(
            {"baseline_value": torch.full((particles, 1) if particles > 1 else (), elbo)}
        ),
    }


def gradient_variance(
    problem, sizes: tuple[int, ...] = GRAD_S, draws: int = 300, seed: int = 0
) -> dict[str, list[float]]:
    """Variance of the gradient estimate of ``-ELBO`` (summed over every parameter of the
    guide) at the guide's initialisation, per estimator and number of samples ``S``."""
    model, guide, data = problem.model, problem.guide, problem.data
    with pyro.get_param_store().scope(), torch.no_grad():
        pyro.set_rng_seed(seed)
        elbo = -make_estimator("reparam", 4000, max_plate_nesting=1).loss(model, guide, **data)
    result: dict[str, list[float]] = {}
    for s in sizes:
        for name, est in estimators(s, elbo.item()).items():
            with pyro.get_param_store().scope():  # a fresh guide (and baseline) every time
                pyro.set_rng_seed(seed)
                g = gradient_draws(model, guide, data, est, draws)
            total = sum(v.reshape(draws, -1).double().var(0).sum() for v in g.values())
            result.setdefault(name, []).append(float(total))
    return result


#: the two problems: one latent (the coin of Pyro's SVI tutorial) and ten (linear regression)
GRAD_PROBLEMS = (
    ("coin", "coin: 1 latent, Beta guide",
     {"heads": 6, "tails": 4, "prior_a": 10.0, "prior_b": 10.0, "guide": "beta"},
     "--heads 6 --tails 4 --prior-a 10 --prior-b 10 --guide beta"),
    ("linreg", "linreg (diabetes): 10 latents, mean-field Gaussian guide",
     {"guide": "mean-field"}, "--guide mean-field"),
)  # fmt: skip


def gradient_section(out: Path, quick: bool = False) -> tuple[str, dict]:
    """Gradient variance against S, coin and linear regression; returns the HTML and numbers."""
    t0 = time.perf_counter()
    sizes, draws = ((1, 16), 60) if quick else (GRAD_S, 150)
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.9))
    numbers: dict = {"S": list(sizes)}
    rows, commands = [], []
    for ax, (model, title, options, argv) in zip(axes, GRAD_PROBLEMS, strict=True):
        w = REGISTRY[model]
        problem = start(w, from_keywords(w, **options)).build()
        var = numbers[model] = gradient_variance(problem, sizes, draws)
        for i, (name, v) in enumerate(var.items()):
            ax.plot(sizes, v, "o-", color=f"C{i}", label=name)
            ax.plot(sizes, [v[0] / s for s in sizes], ":", color=f"C{i}", lw=1)
            rows.append([model, name, *v, v[0] / var["reparameterization"][0]])
        ax.plot([], [], "k:", lw=1, label="theory: variance(S = 1) / S")
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("samples S per gradient estimate")
        ax.set_title(title, fontsize=9)
        commands.append(f"bayesdl fit {model} {argv}")
    axes[0].set_ylabel("variance of the gradient (sum over guide params)")
    axes[0].legend(fontsize=7)
    save(fig, out, FIGURES[1])

    coin, lin = numbers["coin"], numbers["linreg"]
    numbers["verdict"] = gradient_verdict(numbers, sizes, draws)
    r_coin = coin["score, no baseline"][0] / coin["reparameterization"][0]
    best = lambda v: min(v[n][0] for n in v if n != "reparameterization")  # noqa: E731
    r_lin = best(lin) / lin["reparameterization"][0]
    parts = [
        "<section><h2>gradients: REINFORCE vs the reparameterization trick</h2>",
        "<p>The lecture: <i>&ldquo;Though general, this gradient estimator has too much "
        "variance in practice. Estimator is called REINFORCE, random search in disguise&rdquo;"
        "</i>; the reparameterization trick instead <i>&ldquo;replace[s] a sample from q with a "
        "transformation of a sample from a parameter-less distribution&rdquo;</i>. The "
        "gradient-variance diagnostic (<code>bayesdl.inference.diagnostics</code>, "
        f"{draws} independent estimates per point, at the guide's start) on two models where "
        "both estimators apply. Coin, one latent: without a baseline REINFORCE's variance is "
        f"{r_coin:.0f} times the pathwise one, and Pyro's baselines (a decaying average of the "
        "cost, beta 0.9; or the fixed value E_q[log p - log q]) bring it down to the pathwise "
        "level or below (last column). Linear regression, ten latents and 331 data: the "
        "cost's noise comes from every coordinate, and the best baseline still leaves "
        f"{r_lin:.0f} times the pathwise variance. Every estimator falls like 1/S (dotted: "
        "variance at S = 1 divided by S): only S times the samples, S times the cost, buys "
        "the variance down.</p>",
        report.table(
            [
                "model",
                "estimator",
                *(f"variance, S = {s}" for s in sizes),
                "ratio to pathwise, S = 1",
            ],
            rows,
        ),  # fmt: skip
        f"<div class='figs wide'>{report.image(out / FIGURES[1])}</div>",
        _meta(
            "; ".join(commands) + " (the models; variances by "
            "inference.diagnostics.gradient_draws)",
            time.perf_counter() - t0,
        ),
    ]
    return "\n".join(parts), numbers


def gradient_verdict(numbers: dict, sizes: tuple[int, ...], draws: int) -> verdict.Verdict:
    """The claims in numbers: REINFORCE without a baseline has more variance than the pathwise
    estimator (ratio > 1 at S = 1), and every estimator's variance falls like 1/S (S times the
    variance at the largest S over the variance at S = 1 within [0.5, 2]: a variance from
    ``draws`` estimates has a relative sd of sqrt(2 / draws), under 0.2 here)."""
    checks = []
    for model in ("coin", "linreg"):
        var = numbers[model]
        pathwise = var["reparameterization"][0]
        checks.append((f"{model} no-baseline / pathwise", var["score, no baseline"][0] / pathwise,
                       1.0, math.inf))  # fmt: skip
        for name, v in var.items():
            checks.append((f"{model} {name}: S var(S={sizes[-1]}) / var(1)",
                           sizes[-1] * v[-1] / v[0], 0.5, 2.0))  # fmt: skip
    agrees, agreement = verdict.within(checks, "claim checks hold")
    return verdict.Verdict(None, f"none (gradients at the guide's start, {draws} draws a point)",
                           agrees=agrees, agreement=agreement)  # fmt: skip


# -- 10. Stochastic depth: sample or mode of p(y, z | x) -----------------------------------------
RULES = (
    ("joint_sample", "sample (y, z) ~ p(y, z | x)"),
    ("joint_mode", "mode argmax p(y, z | x)"),
    ("early_exit_q_mode", "early exit at the mode of q(z | x)"),
)


def depth_section(out: Path, quick: bool = False) -> tuple[str, dict]:
    """Test-time depth rules of a fitted stochastic-depth net and p(z | x, y) of two digits."""
    t0 = time.perf_counter()
    steps = 60 if quick else 500
    options = {"steps": steps, "width": 16, "depth_penalty": 0.02}
    argv = ["--steps", str(steps), "--width", "16", "--depth-penalty", "0.02"]
    run = _fit("stochastic-depth", argv, options)
    problem, wf = run.problem, run.workflow
    x, y = problem.extra["x_test"], problem.extra["y_test"]
    L = wf.model_options.blocks
    with problem.scope(), torch.no_grad():
        rules = wf.rules(problem, x, y)
        log_pi = problem.model.net(x).log_softmax(-1)  # (N, L, K)
        log_prior = problem.model.prior_logits
        log_q = problem.guide.logits(x).log_softmax(-1)
    n = torch.arange(len(x))
    # p(z | x, y) ∝ p(z) p(y | x, z) for the true label; p(z | x) = p(z) (y summed out)
    post = (log_prior + log_pi[n, :, y]).softmax(-1)
    p_true = rules["predictive_prior"]["probs"][n, y]
    easy, hard = int(p_true.argmax()), int(p_true.argmin())

    rows, numbers = [], {}
    for key, label in RULES:
        r = rules[key]
        run_blocks = L if key == "joint_mode" else r["mean_depth"]
        rows.append([label, r["accuracy"], r["nll"], r["mean_depth"], run_blocks])
        numbers[key] = {k: r[k] for k in ("accuracy", "mean_depth", "depth_histogram")}
        numbers[key]["blocks_run"] = run_blocks
    full = rules["full_depth_readout"]["accuracy"]

    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4))
    zs = np.arange(1, L + 1)
    shape = problem.extra["image_shape"]
    for ax, i, what in ((axes[0], easy, "easy"), (axes[1], hard, "hard")):
        ax.bar(zs - 0.2, post[i].numpy(), 0.4, label=f"p(z | x, y = {int(y[i])}) (exact)")
        ax.bar(zs + 0.2, log_q[i].exp().numpy(), 0.4, label="q(z | x) (amortized)")
        ax.step(zs, log_prior.exp().numpy(), where="mid", color="k", lw=1,
                label="p(z | x) = p(z) (y unknown)")  # fmt: skip
        ax.set_xlabel("depth z (blocks)")
        ax.set_xticks(zs)
        ax.set_title(f"{what} digit: p(y = {int(y[i])} | x) = {float(p_true[i]):.3f}", fontsize=9)
        top = max(float(post[i].max()), float(log_q[i].exp().max()))
        ax.set_ylim(0, 1.6 * top)  # room for the digit and the legend
        if shape is not None:
            inset = ax.inset_axes([0.8, 0.64, 0.18, 0.34])
            inset.imshow(x[i].reshape(shape).numpy(), cmap="gray_r")
            inset.axis("off")
    axes[0].set_ylabel("probability")
    axes[0].legend(fontsize=7, loc="upper left")
    save(fig, out, FIGURES[2])
    numbers["full_depth_accuracy"] = full
    numbers["verdict"] = verdict.runs_verdict(
        [("stochastic-depth", run.summary)],
        None,
        "no exact answer to compare: the rules are shown side by side, not judged",
    )
    numbers["posterior_easy"], numbers["posterior_hard"] = post[easy].tolist(), post[hard].tolist()

    parts = [
        "<section><h2>stochastic depth: a sample or the mode of p(y, z | x)</h2>",
        "<p>The lecture: <i>&ldquo;How to decide upon number of layers at the test time? "
        "Obtain a sample from (or the mode statistic of) the true posterior p(y, z | x) &prop; "
        "p(y | x, z) p(z)&rdquo;</i>. Fitted to the 8x8 digits (L = "
        f"{L} blocks, depth prior &prop; exp(-0.02 (z - 1))), on {len(x)} test digits. A "
        "sample of p(y, z | x) draws its depth from the prior (y is unknown, so p(z | x) = "
        "p(z)) and runs only those blocks, but its label is a sample too; the mode needs "
        "p(y | x, z) at every depth, so all blocks run even though the answer is read at z*; "
        "the amortized q(z | x), trained with the labels, picks a depth per input before "
        "running anything (after this short fit it stays close to the prior; its mode is depth "
        f"1 for {rules['early_exit_q_mode']['depth_histogram'][0]} of {len(x)} digits). "
        f"The full-depth read-out of the same net scores {full:.3f}. "
        "Below: the exact p(z | x, y) of the easiest and the hardest test digit (by the "
        "predictive probability of their label) beside q(z | x).</p>",
        report.table(
            ["rule", "accuracy", "NLL of p(y | x, z)", "mean depth z", "blocks run per input"],
            rows,
        ),
        f"<div class='figs wide'>{report.image(out / FIGURES[2])}</div>",
        _meta(f"bayesdl fit stochastic-depth {shlex.join(argv)}", time.perf_counter() - t0),
    ]
    return "\n".join(parts), numbers


def sections(
    out: Path, overwrite: bool = False, progress: bool = False, quick: bool = False
) -> list[str]:
    """The three sections, their figures in ``out/tour_models``; ``quick``: tiny settings (tests).

    Nothing is written but the figures (``overwrite`` replaces them; ``progress`` is unused:
    the fits are short)."""
    del overwrite, progress  # refuse_existing has checked the folder already
    out = Path(out) / "tour_models"
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"cannot make {out}: {e.strerror or e}") from None
    with torch.random.fork_rng(devices=[]):
        return [
            verdict.shown(_with_verdict, make, out, quick)
            for make in (vae_section, gradient_section, depth_section)
        ]


def _with_verdict(make, out: Path, quick: bool) -> tuple[str, verdict.Verdict]:
    """A section's HTML and the verdict it put among its numbers."""
    section, numbers = make(out, quick)
    return section, numbers["verdict"]
