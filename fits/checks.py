"""Did it work? Every run's checks, each with its value and verdict, and one verdict over all.

``summary.json`` of a VI run holds

    "checks": {"convergence": {"value": ..., "verdict": "pass" | "fail", ...},
               "k_hat": {"value": 0.41, "verdict": "good" | "ok" | "bad" | "shifted" |
               "not checked", ...}},
    "reliable": true | false | null, "reliable_reasons": [...]

``k_hat`` is the PSIS diagnostic of the fitted guide against the model's joint on the full
data (:mod:`bayesdl.inference.psis`), computed after every fit of a user model; a named model
(amortised guides, networks, closed forms checked by ``bayesdl evaluate``), a point estimate
and a model with enumerated discrete sites say ``"not checked: ..."`` with the reason.
``reliable`` is true only when the run converged and every check that ran passed; false when
one failed; null when it converged but the family could not be checked. A NUTS run has the
same keys: split R-hat, effective sample size and divergences.
"""

from __future__ import annotations

import math
import random
import warnings
from contextlib import contextmanager
from typing import Any

import numpy as np
import pyro
import torch

from bayesdl.inference import psis
from bayesdl.inference.mcmc import RHAT_LIMIT

#: k-hat's draws, and the seed offset of their RNG (the fit's seed plus this)
PSIS_DRAWS = psis.DRAWS
#: importance-corrected summaries "differ" past this shift of a mean (in raw sds) or sd ratio
SHIFT, SD_RATIO = 0.1, (0.9, 1.1)
#: beyond this shift (raw sds) or sd ratio the raw summaries are off by the check's own
#: measure (the tolerances by which the tests call a fit right): the run is not reliable
OFF_SHIFT, OFF_SD_RATIO = 0.25, (0.8, 1.25)
#: a NUTS run's effective sample size per chain below this fails (Vehtari et al. 2021)
ESS_PER_CHAIN = 100
#: why a named model's family is not checked
NAMED = (
    "not checked: k-hat is computed for user models; a named model's guide is amortised "
    "(VAE), has many weights (BNN) or has a closed form to check (bayesdl evaluate)"
)
REMEDIES = (
    "try a richer guide (--guide auto-mvn or auto-lowrank; Python guide=...), NUTS "
    '(--inference nuts; method="nuts"), and bayesdl compare RUN NUTS_RUN'
)
#: the remedies for a full-covariance Gaussian, the richest autoguide: its means and sds may
#: still be close (a skewed posterior's optimal Gaussian has light tails: docs/did_it_work.md)
FULL_RANK_REMEDIES = (
    "a Gaussian family holds no skew or heavy tail; check it against NUTS (--inference nuts; "
    'method="nuts") with bayesdl compare RUN NUTS_RUN'
)


def remedies(guide_name: str) -> str:
    """What to try when k-hat is above the limit, given the guide that was used."""
    if guide_name == "auto-mvn":
        return FULL_RANK_REMEDIES
    if guide_name == "auto-lowrank":
        return REMEDIES.replace("--guide auto-mvn or auto-lowrank", "--guide auto-mvn")
    return REMEDIES


class ImportanceWarning(RuntimeWarning):
    """k-hat above 0.7: the guide is an unreliable approximation of this model's posterior."""


@contextmanager
def seeded(seed: int):
    """Draws from a fixed seed, leaving the caller's torch, numpy and random states as they
    were."""
    np_state, py_state = np.random.get_state(), random.getstate()
    cuda = list(range(torch.cuda.device_count())) if torch.cuda.is_initialized() else []
    with torch.random.fork_rng(devices=cuda):
        pyro.set_rng_seed(seed)
        try:
            yield
        finally:
            np.random.set_state(np_state)
            random.setstate(py_state)


def not_checked(reason: str) -> dict[str, Any]:
    """A check that did not run, and why."""
    return {"value": None, "verdict": "not checked", "reason": reason}


def psis_check(problem, guide, seed: int, batch_size: int | None = None) -> dict[str, Any]:
    """``checks.k_hat``: k-hat of ``guide`` against the problem's model on the full data, its
    verdict, its cost, and how its importance-corrected summaries compare with the raw
    ones."""
    with seeded(seed):
        draws = psis.importance_draws(problem.model, guide, problem.data, PSIS_DRAWS)
    log_w, k = psis.psis(draws.log_ratios)
    verdict = psis.k_verdict(k)
    out: dict[str, Any] = {
        "value": None if not math.isfinite(k) else round(k, 4),
        "verdict": verdict,
        "draws": len(draws.log_ratios),
        "evaluated": draws.how,
        "joint": _joint(draws.full_plates, problem.data_size, batch_size),
        "seconds": round(draws.seconds, 3),
        "limit": psis.K_LIMIT,
    }
    if k == -math.inf:
        out["value"], out["note"] = None, "equal importance ratios: the guide is the posterior"
    if verdict == "bad":
        out["reason"] = f"k-hat {_k(k)} > {psis.K_LIMIT}: the guide is unreliable for this model"
        return out
    out["corrected"] = c = corrected_shift(draws.draws, log_w)
    lo, hi = c["sd_ratio"]
    if c["largest_mean_shift_sd"] > OFF_SHIFT or lo < OFF_SD_RATIO[0] or hi > OFF_SD_RATIO[1]:
        out["verdict"] = "shifted"
        out["reason"] = (
            f"k-hat {_k(k)} ({verdict}), but weighing the guide's draws by p / q moves the mean "
            f"of {c['site']!r} by {c['largest_mean_shift_sd']:.2f} sd (sd ratios {lo:.2f}-"
            f"{hi:.2f}): the raw summaries are off; use post.summary(corrected=True)"
        )
    return out


def _joint(full: dict[str, int], data_size: int | None, batch_size: int | None) -> str:
    """On what data the joint was evaluated, in words."""
    if full:
        plates = ", ".join(f"all {n} rows of plate {name!r}" for name, n in full.items())
        return f"{plates} (subsampled while fitting)"
    if batch_size and data_size:
        return f"all {data_size} rows (minibatches of {batch_size} while fitting)"
    return f"all {data_size} rows" if data_size else "all the data"


def _k(k: float) -> str:
    return "inf" if math.isinf(k) else f"{k:.2f}"


def corrected_shift(draws: dict[str, torch.Tensor], log_w: torch.Tensor) -> dict[str, Any]:
    """How far the PSIS-weighted means and sds lie from the raw ones of the same draws: the
    largest mean shift in raw sds, the range of sd ratios, and whether they differ."""
    uniform = torch.zeros(len(log_w), dtype=torch.float64)
    raw = psis.weighted_stats(draws, uniform)
    fixed = psis.weighted_stats(draws, log_w)
    shift, ratios, where = 0.0, [], None
    for name in raw:
        sd = raw[name]["std"].reshape(-1).clamp(min=1e-300)
        d = ((fixed[name]["mean"] - raw[name]["mean"]).reshape(-1).abs() / sd).max()
        if float(d) > shift:
            shift, where = float(d), name
        ratios.append(fixed[name]["std"].reshape(-1) / sd)
    r = torch.cat(ratios) if ratios else torch.ones(1, dtype=torch.float64)
    lo, hi = float(r.min()), float(r.max())
    differs = shift > SHIFT or lo < SD_RATIO[0] or hi > SD_RATIO[1]
    out = {
        "largest_mean_shift_sd": round(shift, 3),
        "site": where,
        "sd_ratio": [round(lo, 3), round(hi, 3)],
        "effective_draws": round(psis.effective_draws(log_w), 1),
        "differs": bool(differs),
    }
    if differs:
        out["note"] = (
            f"importance-corrected summaries differ from the raw ones (the mean of {where!r} "
            f"moves {shift:.2f} sd; sd ratios {lo:.2f}-{hi:.2f}): post.summary(corrected=True)"
        )
    return out


def convergence_check(convergence: dict) -> dict[str, Any]:
    """``checks.convergence`` from ``summary.json``'s ``convergence``."""
    ok = convergence.get("converged")
    out = {
        "value": ok,
        "verdict": "pass" if ok else "fail",
        "test": convergence.get("test"),
        "reason": convergence.get("reason"),
    }
    if not ok:
        out["advice"] = convergence.get("advice")
    return out


def verdict(checks: dict[str, dict]) -> tuple[bool | None, list[str]]:
    """``reliable`` and its reasons: false when a check failed, null when one was not run."""
    failed = [
        f"{name}: {c.get('reason') or c.get('verdict')}"
        for name, c in checks.items()
        if c["verdict"] in ("fail", "bad", "shifted")
    ]
    if failed:
        return False, failed
    missing = [
        f"{name}: {c['reason']}" for name, c in checks.items() if c["verdict"] == "not checked"
    ]
    return (None, missing) if missing else (True, [])


def vi_checks(
    workflow, problem, guide, convergence: dict, seed: int, batch_size: int | None = None
) -> dict[str, Any]:
    """``checks``, ``reliable`` and ``reliable_reasons`` of a VI run (inside its param store);
    warns in one line when k-hat is above 0.7."""
    checks = {"convergence": convergence_check(convergence)}
    reason = getattr(workflow, "importance_check", NAMED)
    if reason is None:
        reason = _family_unchecked(problem, guide)
    if reason is not None:
        checks["k_hat"] = not_checked(reason)
    else:
        checks["k_hat"] = psis_check(problem, guide, seed, batch_size)
        finished = bool(convergence.get("converged"))
        if not finished:
            checks["k_hat"]["note"] = "the fit had not converged: k-hat judged an unfinished guide"
        name = problem.extra.get("guide") or workflow.settings.guide
        if checks["k_hat"]["verdict"] == "bad":
            warn_k_hat(checks["k_hat"], name, finished)
        elif checks["k_hat"]["verdict"] == "shifted":
            warnings.warn_explicit(
                f"{checks['k_hat']['reason']}, or {remedies(name)}", ImportanceWarning, "bayesdl", 0
            )
    reliable, reasons = verdict(checks)
    return {"checks": checks, "reliable": reliable, "reliable_reasons": reasons}


def _family_unchecked(problem, guide) -> str | None:
    """Why k-hat cannot judge this user model's guide, or None."""
    from pyro.infer.autoguide import AutoDelta

    if isinstance(guide, AutoDelta) or type(guide).__name__ == "AutoLaplaceApproximation":
        return "not checked: a point estimate (MAP) has no density to weigh"
    if problem.extra.get("discrete"):
        return (
            "not checked: the model's discrete sites are summed out (enumeration), so the "
            "joint of the guide's sites alone is not computed"
        )
    return None


def warn_k_hat(check: dict, guide: Any, converged: bool = True) -> None:
    """One :class:`ImportanceWarning` line naming the remedies."""
    name = guide if isinstance(guide, str) else getattr(guide, "__name__", "the guide")
    k = _k(check["value"] if check["value"] is not None else math.inf)
    first = "" if converged else "finish the fit first (it had not converged), then "
    message = (
        f"k-hat {k} > {psis.K_LIMIT}: the approximation ({name}) is unreliable for this "
        f"model; {first}{remedies(name)}"
    )
    warnings.warn_explicit(message, ImportanceWarning, "bayesdl", 0)


def nuts_checks(summary: dict, chains: int) -> dict[str, Any]:
    """``checks``, ``reliable`` and ``reliable_reasons`` of a NUTS run from its summary."""
    conv = summary["convergence"]
    r_hat, ess, div = conv.get("max_r_hat"), conv.get("min_n_eff"), summary.get("divergences", 0)
    need = ESS_PER_CHAIN * max(1, chains)
    finite = r_hat is not None and math.isfinite(r_hat)
    checks = {
        "convergence": convergence_check(conv),
        "r_hat": {
            "value": r_hat if finite else None,
            "verdict": "pass" if finite and r_hat < RHAT_LIMIT else "fail",
            "limit": RHAT_LIMIT,
        },
        "ess": {
            "value": ess if ess is not None and math.isfinite(ess) else None,
            "verdict": "pass" if ess is not None and ess >= need else "fail",
            "limit": need,
            "reason": f"smallest effective sample size {ess:.0f} < {need} "
            f"({ESS_PER_CHAIN} per chain): draw more (--samples)"
            if ess is not None and math.isfinite(ess)
            else "no effective sample size (too few draws)",
        },
        "divergences": {
            "value": div,
            "verdict": "pass" if div == 0 else "fail",
            "reason": f"{div} divergent transitions: the sampler missed part of the posterior "
            "(reparameterise, or raise --target-accept)",
        },
    }
    for c in checks.values():  # reasons only where they explain a failure
        if c["verdict"] == "pass":
            c.pop("reason", None)
    reliable, reasons = verdict(checks)
    return {"checks": checks, "reliable": reliable, "reliable_reasons": reasons}


def verdict_line(summary: dict) -> str:
    """The run's checks in a few words, for the CLI's line after ``fit``: ``converged, k-hat
    0.15 (good): reliable``."""
    checks = summary.get("checks") or {}
    parts = []
    for name, c in checks.items():
        if name == "k_hat":
            value = c.get("value")
            shown = "not checked" if c["verdict"] == "not checked" else f"{c['verdict']}"
            parts.append(f"k-hat {value:.2f} ({shown})" if value is not None else f"k-hat {shown}")
        elif name == "convergence":
            parts.append("converged" if c["verdict"] == "pass" else "NOT converged")
        elif c["verdict"] != "pass":
            parts.append(f"{name.replace('_', '-')} {c.get('value')} (fail)")
    word = {True: "reliable", False: "UNRELIABLE", None: "reliability unknown"}
    return ", ".join(parts) + f": {word[summary.get('reliable')]}"


def corrected_summary(model, guide, data: dict, num_samples: int, seed: int) -> dict[str, dict]:
    """PSIS-weighted ``{site: {"mean", "std", "5%", "50%", "95%"}}`` of the model's latent
    sites from ``num_samples`` guide draws (inside the fit's param store); a
    :class:`~bayesdl.UserError` when their k-hat is above 0.7 (the weights are then no more
    trustworthy than the guide)."""
    from bayesdl.inference.errors import UserError

    with seeded(seed):
        draws = psis.importance_draws(model, guide, data, num_samples)
    log_w, k = psis.psis(draws.log_ratios)
    if psis.k_verdict(k) == "bad":
        raise UserError(
            f"k-hat {_k(k)} > {psis.K_LIMIT} over {num_samples} draws: importance-corrected "
            f"summaries are as unreliable as the guide; {REMEDIES}"
        )
    stats = psis.weighted_stats(draws.draws, log_w)
    return {name: {key: _plain(v) for key, v in row.items()} for name, row in stats.items()}


def _plain(t: torch.Tensor) -> Any:
    return t.item() if t.dim() == 0 else t.tolist()
