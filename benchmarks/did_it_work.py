"""Did it work? Models of Pyro's examples fitted with bayesdl's defaults, against NUTS.

    OMP_NUM_THREADS=1 python benchmarks/did_it_work.py --cache runs/did_it_work [--only NAME]

For each model of ``benchmarks/did_it_work_models.py``: a NUTS reference (Pyro's own
``MCMC(NUTS(model))``, 2 chains x ``--samples`` draws after ``--warmup``; cached as JSON in
``--cache``), then ``bayesdl.fit(model, data,
**options)`` with the defaults (or the options the row names). Per row: steps, seconds of
the fit (k-hat included) and of k-hat alone, ``converged``, k-hat and its verdict,
``reliable``, the largest ``|mean - NUTS mean| / NUTS sd`` over every latent element and
the range of ``sd / NUTS sd`` (4000 draws of the guide). A Markdown table on stdout
(docs/did_it_work.md). Runs with an older bayesdl too (the checks' columns are then empty).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pyro
import torch
from pyro.infer import MCMC, NUTS
from pyro.infer.mcmc.util import diagnostics

import bayesdl
from bayesdl.inference.psis import full_plates

sys.path.insert(0, str(Path(__file__).resolve().parent))
from did_it_work_models import cases, data_of  # noqa: E402


def nuts_reference(name: str, model, data: dict, args) -> dict:
    """``{site: {"mean", "std"}}`` of NUTS (cached by model name)."""
    path = Path(args.cache) / (name.replace(" ", "_").replace(",", "") + ".nuts.json")
    if path.exists():
        return json.loads(path.read_text())
    chains = []
    for chain in range(2):  # Pyro's own sampler, as a Pyro user runs it
        pyro.set_rng_seed(chain)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            mcmc = MCMC(
                NUTS(model, max_plate_nesting=2), num_samples=args.samples,
                warmup_steps=args.warmup, disable_progbar=True,
            )  # fmt: skip
            with full_plates():  # NUTS takes no subsampled plate: the posterior on all rows
                mcmc.run(**data)
        chains.append(mcmc.get_samples())
    draws = {k: torch.stack([c[k] for c in chains]) for k in chains[0]}
    r_hat = {k: torch.as_tensor(d["r_hat"]).max().item() for k, d in diagnostics(draws).items()}
    ref = {
        k: {"mean": v.flatten(0, 1).mean(0).tolist(), "std": v.flatten(0, 1).std(0).tolist(),
            "r_hat": r_hat[k]}
        for k, v in draws.items()
    }  # fmt: skip
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(ref) + "\n")
    return ref


def compare(fitted: dict, ref: dict) -> tuple[float, float, float]:
    """Largest |mean diff| / sd and the sd ratio range over the reference's latent sites."""
    diffs, ratios = [], []
    for site, r in ref.items():
        if site not in fitted:
            continue
        m, s = np.ravel(fitted[site]["mean"]), np.ravel(fitted[site]["std"])
        rm, rs = np.ravel(r["mean"]), np.ravel(r["std"])
        diffs.append(np.abs(m - rm) / rs)
        ratios.append(s / rs)
    d, r = np.concatenate(diffs), np.concatenate(ratios)
    return float(d.max()), float(r.min()), float(r.max())


def row(name: str, source: str, model, raw: dict, options: dict, args) -> str:
    data = data_of(raw)
    ref = nuts_reference(name, model, data, args)
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        post = bayesdl.fit(model, data=data, progress=False, seed=args.seed, **options)
    seconds = time.perf_counter() - t0
    diff, lo, hi = compare(post.summary(num_samples=4000), ref)
    s = post._run.summary
    checks = s.get("checks") or {}
    k = checks.get("k_hat") or {}
    value = k.get("value")
    k_text = "" if not k else (f"{value:.2f} {k['verdict']}" if value is not None else k["verdict"])
    if k.get("verdict") == "not checked":
        k_text = "not checked"
    shown = ", ".join(f"{a}={b}" for a, b in options.items()) or "defaults"
    return (
        f"| {name} | {source} | {shown} | {s.get('guide')} | {s['steps']} | {seconds:.0f} | "
        f"{k.get('seconds', '')} | {s.get('converged')} | {k_text} | {s.get('reliable', '')} | "
        f"{diff:.2f} | {lo:.2f}-{hi:.2f} |"
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cache", default="runs/did_it_work", help="folder of the NUTS references")
    p.add_argument("--samples", type=int, default=1000)
    p.add_argument("--warmup", type=int, default=500)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--only", action="append", help="rows whose name contains this")
    p.add_argument("--references-only", action="store_true", help="compute the NUTS cache only")
    args = p.parse_args()
    if args.references_only:
        for name, (_, model, raw, _) in cases().items():
            if not args.only or any(o in name for o in args.only):
                nuts_reference(name, model, data_of(raw), args)
                print(f"NUTS reference of {name}", flush=True)
        return
    print(
        "| model | source | options | guide | steps | s | k-hat s | converged | k-hat | "
        "reliable | max mean diff (NUTS sd) | sd ratio |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|", flush=True)
    for name, (source, model, raw, options) in cases().items():
        if args.only and not any(o in name for o in args.only):
            continue
        print(row(name, source, model, raw, options, args), flush=True)


if __name__ == "__main__":
    main()
