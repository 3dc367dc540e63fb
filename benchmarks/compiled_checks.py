"""What the log-point checks of `fit --compile` cost, per workload of `compiled_svi.py`.

    OMP_NUM_THREADS=1 python benchmarks/compiled_checks.py [--only coin,linreg] [--reps 20]

For each workload: the step compiled by Inductor, ms per compiled step (mean over 500 steps),
ms per structure check (``CompiledStep.check``) and per loss check (``check_values``: one more
graph call and one eager loss on the same noise), medians over ``--reps`` calls, and the loss
check's share of a log interval of 100 steps. Also the largest relative difference between the
graph's loss and the eager loss seen over the calls (the check's tolerance is 1e-4). Then the
loop's ms per step in `fit(compile=True, log_every=100)` (compiled_svi.py's steps x --fit-scale)
as shipped (the loss check within its time budget, ``VALUE_CHECK_SHARE``) and without the loss
check, alternating, medians over 3 repetitions.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import pyro  # noqa: E402
import torch  # noqa: E402
from compiled_svi import WORKLOADS, time_fit  # noqa: E402

from bayesdl.inference import FitConfig  # noqa: E402
from bayesdl.inference import compiled as compiled_mod  # noqa: E402
from bayesdl.inference.train import Trainer  # noqa: E402

LOG_EVERY = 100


def measure(name: str, reps: int) -> dict:
    w = WORKLOADS[name]()
    pyro.set_rng_seed(0)
    cfg = FitConfig(steps=10**6, lr=w["lr"], batch_size=w.get("batch_size"))
    with pyro.get_param_store().scope():
        tr = Trainer(w["model"], w["guide"](), cfg, data_size=w.get("size"))
        state = tr.init(w["data"])
        if not tr.compile(state, backend="inductor"):
            raise SystemExit(f"{name}: did not compile")
        for _ in range(20):
            tr.update(state)
        t0 = time.perf_counter()
        for _ in range(500):
            tr.update(state)
        step_ms = (time.perf_counter() - t0) / 500 * 1e3
        structure, values, worst = [], [], 0.0
        for _ in range(reps):
            for _ in range(10):
                tr.update(state)
            t0 = time.perf_counter()
            assert tr.compiled.check(state.data) is None
            structure.append((time.perf_counter() - t0) * 1e3)
            t0 = time.perf_counter()
            why = tr.compiled.check_values(state.data)
            values.append((time.perf_counter() - t0) * 1e3)
            assert why is None, why
            worst = max(worst, tr.compiled.last_value_difference)
    s_ms, v_ms = statistics.median(structure), statistics.median(values)
    return {
        "workload": name,
        "step_ms": step_ms,
        "structure_check_ms": s_ms,
        "loss_check_ms": v_ms,
        "loss_check_share": v_ms / (LOG_EVERY * step_ms + s_ms + v_ms),
        "max_rel_difference": worst,
    }


def fit_overhead(name: str, scale: int) -> tuple[float, float]:
    """ms per step of the compiled fit: (as shipped, without the loss check)."""
    w = WORKLOADS[name]()
    w["steps"] *= scale
    due = compiled_mod.CompiledStep.value_check_due
    times = {True: [], False: []}
    try:
        for _ in range(3):
            for on in (True, False):
                compiled_mod.CompiledStep.value_check_due = due if on else lambda self: False
                times[on].append(time_fit(w, "true")[0])
    finally:
        compiled_mod.CompiledStep.value_check_due = due
    return statistics.median(times[True]), statistics.median(times[False])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--only", default="")
    p.add_argument("--reps", type=int, default=20)
    p.add_argument("--fit-scale", type=int, default=5)
    args = p.parse_args()
    names = args.only.split(",") if args.only else list(WORKLOADS)
    torch.set_num_threads(1)
    print("workload       step ms  structure ms  loss check ms  share of 100 steps  max rel diff")
    for name in names:
        r = measure(name, args.reps)
        print(
            f"{name:14} {r['step_ms']:7.3f}  {r['structure_check_ms']:12.3f}  "
            f"{r['loss_check_ms']:13.3f}  {100 * r['loss_check_share']:17.1f}%  "
            f"{r['max_rel_difference']:.1e}"
        )
    print("workload       fit ms/step: as shipped  without loss check  overhead")
    for name in names:
        on, off = fit_overhead(name, args.fit_scale)
        print(f"{name:14} {on:22.4f}  {off:18.4f}  {100 * (on / off - 1):+7.1f}%")


if __name__ == "__main__":
    main()
