"""The rugged-terrain regression fitted as a user would, against NUTS (issue 13).

    OMP_NUM_THREADS=1 python benchmarks/rugged_convergence.py [--seeds 5] [--samples 1500]

A NUTS reference (2 chains, ``--samples`` draws each after 500 warm-up), then VI fits of
``examples/rugged_terrain.py`` with the former user-model default (2000 steps, cosine decay)
and with ``--steps auto``, auto-mvn and auto-normal, one per seed: the largest
``|mean - NUTS mean| / NUTS sd`` over the 5 sites, the sd ratios, the steps taken and the
convergence flag. Prints a Markdown table (docs/nuts.md).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

import bayesdl
from bayesdl.workflows.user_model import load_module

RUGGED = load_module(Path(__file__).resolve().parents[1] / "examples" / "rugged_terrain.py")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, default=5)
    p.add_argument("--samples", type=int, default=1500)
    args = p.parse_args()
    data = {k: torch.tensor(v, dtype=torch.float32) for k, v in RUGGED.simulate().items()}
    t0 = time.perf_counter()
    nuts = bayesdl.fit(
        RUGGED.model, data=data, method="nuts", num_samples=args.samples, warmup=500,
        progress=False,
    )  # fmt: skip
    ref = nuts.summary()
    print(f"NUTS 2 x {args.samples} draws, {time.perf_counter() - t0:.0f} s:")
    print("| site | mean | sd | R-hat | ESS |\n|---|---|---|---|---|")
    for k, r in ref.items():
        print(f"| {k} | {r['mean']:.4f} | {r['std']:.4f} | {r['r_hat']:.3f} | {r['n_eff']:.0f} |")
    print("\n| guide | steps | seed | steps taken | converged | max mean diff (NUTS sd) "
          "| sd ratio (min-max) | seconds |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|")
    for guide in ("auto-mvn", "auto-normal"):
        for steps in ("2000 cosine", "auto"):
            for seed in range(args.seeds):
                options = {"steps": 2000} if steps != "auto" else {}
                t0 = time.perf_counter()
                post = bayesdl.fit(
                    RUGGED.model, data=data, guide=guide, seed=seed, progress=False, **options
                )
                seconds = time.perf_counter() - t0
                fitted = post.summary(num_samples=4000)
                diff = max(abs(fitted[k]["mean"] - r["mean"]) / r["std"] for k, r in ref.items())
                ratios = [fitted[k]["std"] / r["std"] for k, r in ref.items()]
                print(
                    f"| {guide} | {steps} | {seed} | {post._run.result.steps} | "
                    f"{post.converged} | {diff:.2f} | {min(ratios):.2f}-{max(ratios):.2f} | "
                    f"{seconds:.0f} |"
                )


if __name__ == "__main__":
    main()
