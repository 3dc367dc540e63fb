"""Torch threads against the step's size: `bayesdl fit` on 1, 2, ... threads, CPU and wall time.

Each command runs in a fresh process (as a user runs it), the thread counts interleaved over
``--repeats`` rounds so that a change of load hits them alike; the table gives the median CPU
seconds (user + system of the process) and wall seconds of each. Run it once on a quiet machine
and once beside other work (``--busy N`` starts N spinning processes for the duration)::

    python benchmarks/threads.py --threads 1,2 --repeats 3
    python benchmarks/threads.py --threads 1,2 --repeats 3 --busy 2

The default (``--threads`` not given to `bayesdl fit`) is
:func:`bayesdl.inference.devices.auto_threads`: one thread for a step of under 100,000 numbers.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time

#: the workloads: a small step (Python and Pyro's time) and a large one (matmuls)
COMMANDS = {
    "coin (2 numbers)": ["coin", "--heads", "6", "--tails", "4", "--steps", "2000"],
    "bnn on digits, 300 steps": ["bnn", "--steps", "300"],
}


def _spin() -> None:  # pragma: no cover - a busy neighbour
    while True:
        pass


def run_once(argv: list[str], threads: int | None) -> tuple[float, float]:
    """CPU seconds (the child's user + system) and wall seconds of one `bayesdl fit`."""
    with tempfile.TemporaryDirectory() as d:
        extra = [] if threads is None else ["--threads", str(threads)]
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        t0 = time.perf_counter()
        env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
        cmd = [sys.executable, "-m", "bayesdl", "fit", *argv, *extra, "--quiet", "--out", d + "/r"]
        subprocess.run(cmd, check=True, capture_output=True, env=env)
        wall = time.perf_counter() - t0
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return cpu, wall


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", default="1,2", help="comma-separated counts; 'auto' = none given")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--busy", type=int, default=0, help="spinning processes beside the fits")
    args = p.parse_args()
    counts = [None if t == "auto" else int(t) for t in args.threads.split(",")]
    spinners = [multiprocessing.Process(target=_spin, daemon=True) for _ in range(args.busy)]
    for s in spinners:
        s.start()
    try:
        rows = {}
        for name, argv in COMMANDS.items():
            times = {t: [] for t in counts}
            for _ in range(args.repeats):
                for t in counts:
                    times[t].append(run_once(argv, t))
            rows[name] = times
    finally:
        for s in spinners:
            s.terminate()
    print(f"busy neighbours: {args.busy}; {os.cpu_count()} CPUs; median of {args.repeats}")
    print("| workload | threads | CPU s | wall s |\n|---|---|---|---|")
    for name, times in rows.items():
        for t, runs in times.items():
            cpu = statistics.median(r[0] for r in runs)
            wall = statistics.median(r[1] for r in runs)
            print(f"| {name} | {'auto' if t is None else t} | {cpu:.1f} | {wall:.1f} |")


if __name__ == "__main__":
    main()
