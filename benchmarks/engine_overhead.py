"""Steps per second of `inference.fit` against raw Pyro `SVI.step`, same model, guide, optimizer.

    python benchmarks/engine_overhead.py [--steps 2000] [--repeats 3] [--threads 1]

Both run in one process, alternating, on the coin (Beta guide) and on Bayesian linear
regression (diabetes, full-covariance guide, 32 vectorized particles). `fit` does what
`SVI.step` does plus its bookkeeping (schedules, metrics every 100 steps, checkpoints every
1000 steps -- written to a temporary folder); raw SVI uses `pyro.optim.Adam` and no logging.
The best of the repeats is reported (least disturbed by other load).
"""

from __future__ import annotations

import argparse
import platform
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import pyro  # noqa: E402
import torch  # noqa: E402
from pyro.infer import SVI, Trace_ELBO  # noqa: E402

import bayesdl.guides.coin as coin_guides  # noqa: E402
import bayesdl.guides.linear_regression as lr_guides  # noqa: E402
import bayesdl.models.coin as coin  # noqa: E402
import bayesdl.models.linear_regression as linreg  # noqa: E402
from bayesdl.datasets.bundled import diabetes  # noqa: E402
from bayesdl.inference import FitConfig, fit  # noqa: E402


def problems():
    flips = torch.cat([torch.ones(6), torch.zeros(4)])
    yield (
        "coin",
        coin.model,
        lambda: coin_guides.beta,
        {"flips": flips, "prior_a": 10.0, "prior_b": 10.0},
        1,
        0.05,
    )
    s = diabetes()
    yield (
        "linreg",
        linreg.model,
        lambda: lr_guides.full_covariance(linreg.model),
        {"x": s.x_train, "y": s.y_train},
        32,
        0.05,
    )


def raw_svi(model, guide, data, steps, particles, lr, validate: bool = True) -> float:
    pyro.enable_validation(validate)
    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    svi = SVI(
        model,
        guide,
        pyro.optim.Adam({"lr": lr}),
        Trace_ELBO(num_particles=particles, vectorize_particles=particles > 1),
    )
    svi.step(**data)  # parameter creation, outside the timing
    t = time.perf_counter()
    for _ in range(steps):
        svi.step(**data)
    rate = steps / (time.perf_counter() - t)
    pyro.enable_validation(True)
    return rate


def engine(model, guide, data, steps, particles, lr, out: Path) -> float:
    cfg = FitConfig(steps=steps, lr=lr, particles=particles, log_every=100, checkpoint_every=1000)
    r = fit(model, guide, data, cfg, out, progress=False)
    return steps / r.wall_seconds


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=2000)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    print(
        f"torch {torch.__version__}, pyro {pyro.__version__}, "
        f"{platform.processor() or platform.machine()}, "
        f"{a.threads} thread(s), {a.steps} steps, best of {a.repeats}"
    )
    print(
        f"{'model':<8} {'SVI.step':>10} {'SVI.step, no validation':>24} {'bayesdl fit':>12} "
        f"{'fit / SVI':>10} {'fit / SVI no-val':>17}   (steps/s)"
    )
    for name, model, make_guide, data, particles, lr in problems():
        raw, raw_nv, ours = [], [], []
        with tempfile.TemporaryDirectory() as tmp:
            for r in range(a.repeats):
                raw.append(raw_svi(model, make_guide(), data, a.steps, particles, lr))
                raw_nv.append(raw_svi(model, make_guide(), data, a.steps, particles, lr, False))
                ours.append(
                    engine(model, make_guide(), data, a.steps, particles, lr, Path(tmp) / f"run{r}")
                )
        r, rn, o = max(raw), max(raw_nv), max(ours)
        print(f"{name:<8} {r:>10.0f} {rn:>24.0f} {o:>12.0f} {o / r:>10.2f} {o / rn:>17.2f}")


if __name__ == "__main__":
    main()
