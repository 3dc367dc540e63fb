"""Time per epoch of the discrete-latent models, eager against ``--compile``.

    OMP_NUM_THREADS=1 python benchmarks/compiled_discrete.py [--reps 3] [--steps 600]
        [--only m2,depth-enum] [--out compiled_discrete.json]

Workloads (the CLI's named models on the bundled 8x8 digits, their default settings): M2
(``ss-vae``, 10 labels per class, batch 100, the label enumerated over 10 classes: ``enum``) and the
stochastic-depth residual MLP (8 blocks, batch 256) with its depth summed out (``enum``),
scored (``score``, decaying-average baselines) or relaxed (``relaxed``, Concrete). Each fit is
``fit_problem`` of ``bayesdl fit MODEL --steps S [--compile]``, one thread; ms per step is
``FitResult.steps_per_second`` (the loop after compilation, its log points with their
structure and loss checks included), compile seconds what capture and Inductor took. One
epoch is ceil(N / batch) steps of that model's training split. Medians over ``--reps``, the two
columns alternating within each repetition.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bayesdl.fits.svi import fit_problem  # noqa: E402
from bayesdl.workflows.fit_options import from_argv  # noqa: E402
from bayesdl.workflows.registry import REGISTRY  # noqa: E402

#: name -> (model, options, training points per epoch, batch)
WORKLOADS = {
    "m2": ("ss-vae", ["--labels-per-class", "10"], 1347 - 100, 100),
    "depth-enum": ("stochastic-depth", ["--estimator", "enum"], 1347, 256),
    "depth-score": ("stochastic-depth", ["--estimator", "score"], 1347, 256),
    "depth-relaxed": ("stochastic-depth", ["--estimator", "relaxed"], 1347, 256),
}


def time_fit(model: str, argv: list[str]) -> tuple[float, float, bool, float]:
    """(ms per step, compile seconds, compiled, final ELBO) of one fit."""
    cls = REGISTRY[model]
    args = from_argv(cls, argv, "bench")
    problem = cls(args).build()
    result = fit_problem(problem, args.engine, progress=False)
    return 1e3 / result.steps_per_second, result.compile_seconds, result.compiled, result.final_elbo


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--steps", type=int, default=600)
    p.add_argument("--only", default="")
    p.add_argument("--out", default="")
    a = p.parse_args()
    torch.set_num_threads(1)
    names = a.only.split(",") if a.only else list(WORKLOADS)
    results = {}
    for name in names:
        model, opts, n, batch = WORKLOADS[name]
        epoch = math.ceil(n / batch)
        raw: dict[str, list[float]] = {"eager": [], "compiled": []}
        compile_s, elbo = [], {}
        for rep in range(a.reps):
            for col in ("eager", "compiled") if rep % 2 == 0 else ("compiled", "eager"):
                argv = [*opts, "--steps", str(a.steps), "--compile", str(col == "compiled").lower()]
                t0 = time.perf_counter()
                ms, cs, compiled, e = time_fit(model, argv + ["--log-every", "100"])
                if compiled != (col == "compiled"):
                    raise SystemExit(f"{name}: the {col} fit compiled={compiled}")
                raw[col].append(ms)
                elbo[col] = e
                if col == "compiled":
                    compile_s.append(cs)
                wall = time.perf_counter() - t0
                print(f"[{name}] rep {rep} {col}: {ms:.3f} ms/step ({wall:.1f} s)", flush=True)
        med = {c: statistics.median(v) for c, v in raw.items()}
        results[name] = {
            "ms_per_step": med,
            "ms_per_epoch": {c: v * epoch for c, v in med.items()},
            "steps_per_epoch": epoch,
            "speedup": med["eager"] / med["compiled"],
            "compile_seconds": compile_s,
            "final_elbo": elbo,
            "raw": raw,
        }
        print(
            f"{name:<14} per epoch ({epoch} steps): eager {med['eager'] * epoch:.1f} ms, compiled "
            f"{med['compiled'] * epoch:.1f} ms (x{med['eager'] / med['compiled']:.1f}); compile "
            f"{statistics.median(compile_s):.1f} s",
            flush=True,
        )
    if a.out:
        doc = {"torch": torch.__version__, "reps": a.reps, "steps": a.steps, "results": results}
        Path(a.out).write_text(json.dumps(doc, indent=1))


if __name__ == "__main__":
    main()
