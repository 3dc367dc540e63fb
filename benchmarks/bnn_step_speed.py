"""Training steps per second of the built-in ``bnn``'s guides on two code versions (or
stacks), interleaved in one process: each contender is built once (its own Trainer and
parameter store), warmed up, then timed in ``--repeats`` blocks of ``--block`` steps,
the contenders alternating (and their order flipping) block by block, so the load of the
moment slows both alike; the clock is the process's CPU time (``--wall``: wall time), as
other jobs on a shared box slow the wall time most. Prints the median steps per second of each
and the median (min-max) of the per-block ratio.

    OMP_NUM_THREADS=1 python benchmarks/bnn_step_speed.py [--guides mle,map,...]
        [--stacks layers,net] [--compile] [--repeats 15] [--block 100] [-- EXTRA FIT FLAGS]

``--stacks`` names ``--stack`` values (``layers`` or ``net``: the layers could be fitted up to
commit 3eea60a; docs/bnn.md's "One stack" table ran the net of commit 4a5db98 beside the
layer files of 3eea60a in one checkout) or ``default``; ``--profile NAME`` prints a cProfile of
one contender's steps.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import statistics
import sys
import time
from pathlib import Path

import pyro
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bayesdl.inference.trainer import Trainer  # noqa: E402
from bayesdl.workflows.bnn import BNN  # noqa: E402
from bayesdl.workflows.fit_options import from_argv  # noqa: E402

GUIDES = {
    "mle": ["--guide", "mle"],
    "map": ["--guide", "map"],
    "meanfield": ["--guide", "meanfield"],
    "meanfield-sampled": ["--guide", "meanfield", "--no-local-reparam"],
    "dropout": ["--guide", "dropout"],
    "sparse-vd": ["--guide", "sparse-vd"],
}


#: the clock of a timing: CPU time of this process (on a shared box the other jobs' load
#: slows its wall time, not its CPU time), or ``--wall``
CLOCK = [time.process_time]


class Contender:
    """One built problem with its Trainer, in a parameter store of its own."""

    def __init__(self, argv: list[str], compile_: bool):
        self.compiled = False
        options = from_argv(BNN, argv)
        w = BNN(options.replace(prior_scale=BNN(options).prior_scale))
        self.problem = w.build()
        self.config = options.engine
        pyro.set_rng_seed(self.config.seed)
        self.store = {"params": {}, "constraints": {}}
        with pyro.get_param_store().scope(self.store):
            p = self.problem
            self.trainer = Trainer(p.model, p.guide, self.config, data_size=p.data_size)
            self.state = self.trainer.init(p.data)
            if compile_:
                t0 = time.perf_counter()
                self.compiled = self.trainer.compile(self.state)  # else eager, said on stderr
                self.compile_seconds = time.perf_counter() - t0

    def run(self, steps: int) -> float:
        """Steps per CPU second of this process over ``steps`` steps (``--wall``: per
        second of wall time)."""
        with pyro.get_param_store().scope(self.store):
            t0 = CLOCK[0]()
            for _ in range(steps):
                self.trainer.update(self.state)
            self.state.running.item()  # nothing queued (CPU: a no-op)
            return steps / (CLOCK[0]() - t0)


def stack_argv(stack: str) -> list[str]:
    return [] if stack == "default" else ["--stack", stack]


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--guides", default=",".join(GUIDES))
    p.add_argument("--stacks", default="layers,net")
    p.add_argument("--compile", action="store_true")
    p.add_argument("--repeats", type=int, default=15)
    p.add_argument("--block", type=int, default=100)
    p.add_argument("--warmup", type=int, default=50)
    p.add_argument("--profile")
    p.add_argument("--wall", action="store_true", help="time wall seconds, not CPU seconds")
    a, extra = p.parse_known_args()
    if a.wall:
        CLOCK[0] = time.perf_counter
    extra = [e for e in extra if e != "--"]
    torch.set_num_threads(1)
    stacks = a.stacks.split(",")
    print(f"| guide | {' | '.join(stacks)} | ratio {stacks[-1]} / {stacks[0]} median (min-max) |")
    print("|---|" + "---|" * len(stacks) + "---|")
    for g in a.guides.split(","):
        base = [*GUIDES[g], "--steps", "100000", "--log-every", "100000", *extra]
        base += ["--compile", "true"] if a.compile else []
        runs = {s: Contender([*base, *stack_argv(s)], a.compile) for s in stacks}
        for c in runs.values():
            c.run(a.warmup)
        if a.profile:
            prof = cProfile.Profile()
            prof.enable()
            runs[a.profile].run(a.block * 3)
            prof.disable()
            pstats.Stats(prof).sort_stats("tottime").print_stats(25)
        sps: dict[str, list[float]] = {s: [] for s in stacks}
        for r in range(a.repeats):
            order = stacks if r % 2 == 0 else stacks[::-1]
            for s in order:
                sps[s].append(runs[s].run(a.block))
        ratios = [b / f for f, b in zip(sps[stacks[0]], sps[stacks[-1]], strict=True)]
        med = " | ".join(
            f"{statistics.median(sps[s]):.0f}"
            + (" (eager)" if a.compile and not runs[s].compiled else "")
            for s in stacks
        )
        print(
            f"| {g} | {med} | {statistics.median(ratios):.2f} "
            f"({min(ratios):.2f}-{max(ratios):.2f}) |",
            flush=True,
        )


if __name__ == "__main__":
    main()
