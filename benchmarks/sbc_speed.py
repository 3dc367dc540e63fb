"""Time of simulation-based calibration, eager against compiled fits (issue 21, item 4).

    OMP_NUM_THREADS=1 python benchmarks/sbc_speed.py --replications 100 --mode compiled
    OMP_NUM_THREADS=1 python benchmarks/sbc_speed.py --replications 100 --mode eager

``bayesdl.sbc`` on ``examples/sbc_regression.py`` (20 rows, 2 coefficients), one design per
``--design``, guide ``--guide``, ``--steps`` fixed steps a fit (default 1000), L = 99 draws:
the wall and CPU seconds of the whole SBC and per replication (mean and median of the fits,
the process's first fit apart: with ``--compile`` it pays for Inductor's start), and the
verdict. Prints one Markdown row (docs/sbc.md); ``--json FILE`` keeps the numbers.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np
import torch

import bayesdl

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--replications", type=int, default=100)
    p.add_argument("--mode", choices=("eager", "compiled"), default="compiled")
    p.add_argument("--design", choices=("correlated", "orthogonal"), default="correlated")
    p.add_argument("--guide", default="auto-normal")
    p.add_argument("--steps", type=int, default=1000)
    p.add_argument("--json", default=None)
    args = p.parse_args()
    torch.set_num_threads(1)
    t0, c0 = time.perf_counter(), time.process_time()
    result = bayesdl.sbc(
        f"{ROOT / 'examples' / 'sbc_regression.py'}:model",
        data=ROOT / "examples" / "data" / f"sbc_{args.design}.csv",
        x_cols="x1,x2", y_col="y", guide=args.guide, replications=args.replications,
        steps=args.steps, compile=args.mode == "compiled", progress=False,
    )  # fmt: skip
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    reps = result.replications
    fits = np.array([r["fit_seconds"] for r in reps[1:]])
    fit_cpu = np.array([r["fit_cpu_seconds"] for r in reps[1:]])
    whole = np.array([r["fit_seconds"] + r["draw_seconds"] for r in reps[1:]])
    row = {
        "mode": args.mode,
        "design": args.design,
        "guide": args.guide,
        "steps": args.steps,
        "replications": args.replications,
        "wall_seconds": round(wall, 1),
        "cpu_seconds": round(cpu, 1),
        "first_fit_seconds": reps[0]["fit_seconds"],
        "fit_median_seconds": round(float(np.median(fits)), 3),
        "fit_cpu_mean_seconds": round(float(fit_cpu.mean()), 3),
        "replication_mean_seconds": round(float(whole.mean()), 3),
        "verdict": result.verdict,
        "diagnosis": result.diagnosis,
        "z_var": {t.label: round(t.z_var, 2) for t in result.tests},
        "unconverged": sum(1 for r in reps if r.get("converged") is False),
        "torch": torch.__version__,
        "machine": platform.machine(),
    }
    print(
        f"| {args.mode} | {args.design} | {args.guide} | {args.replications} | "
        f"{row['wall_seconds']} | {row['cpu_seconds']} | {row['first_fit_seconds']:.2f} | "
        f"{row['fit_median_seconds']:.3f} | {row['fit_cpu_mean_seconds']:.3f} | "
        f"{row['replication_mean_seconds']:.3f} | {result.verdict} |"
    )
    print("\n".join(f"  {line}" for line in result.diagnosis))
    if args.json:
        Path(args.json).write_text(json.dumps(row, indent=1) + "\n")


if __name__ == "__main__":
    main()
