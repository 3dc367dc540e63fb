"""The built-in ``bnn`` on its two stacks, side by side in one process: the layer classes of
``models/bnn.py`` ("layers", the built-in path up to commit af75b74, deleted at 76c52b6) against
the network made Bayesian by ``bayesdl.bnn.bayesian`` ("net", issue 20 item 4), every built-in
guide with the same options: test accuracy, NLL, ECE (15 bins), the compression of sparse VD,
the training loop's steps per second (eager, or ``--compile``) and the compile time.

    OMP_NUM_THREADS=1 python benchmarks/bnn_stacks.py [--guides meanfield,...] [--seeds 0]
        [--stacks layers,net] [--compile] [--data mnist --data-dir DIR] [-- EXTRA FIT FLAGS]

The stacks alternate within each guide and seed, so the load of the moment slows both alike.
Since issue 20 deleted the layer classes, ``--stack layers`` no longer fits: run the
comparison in a checkout of commit 3eea60a (where docs/bnn.md's "One stack" table ran), or
``--stacks net`` here.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pyro
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bayesdl.fits.svi import fit_problem  # noqa: E402
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


def workflow(stack: str, argv: list[str]) -> tuple[type[BNN], list[str]]:
    """The ``bnn`` workflow and its flags on ``stack`` (``--stack`` since issue 20 item 4;
    before it, the any-network path forced for the built-in guides)."""
    if stack == "default":
        return BNN, argv
    if hasattr(BNN, "stack"):
        return BNN, [*argv, "--stack", stack]
    net = stack == "net"
    return type("BNNOn", (BNN,), {"_net": lambda self: net or BNN._net(self)}), argv


def one(stack: str, argv: list[str]) -> dict:
    cls, argv = workflow(stack, argv)
    options = from_argv(cls, argv)
    w = cls(options.replace(prior_scale=cls(options).prior_scale))
    problem = w.build()
    pyro.clear_param_store()
    r = fit_problem(problem, options.engine, progress=False)
    with problem.scope():
        rep = w._report(problem)
    t = rep["test"]
    comp = rep.get("sparsity", {}).get("compression")
    return {
        "acc": t["accuracy"],
        "nll": t["nll"],
        "ece": t["ece"],
        "comp": comp,
        "pruned": t.get("accuracy_pruned_mean_network"),
        "sps": options.engine.steps / r.wall_seconds,
        "compile": r.compile_seconds,
    }


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--guides", default=",".join(GUIDES))
    p.add_argument("--stacks", default="layers,net")
    p.add_argument("--seeds", default="0")
    p.add_argument("--compile", action="store_true")
    p.add_argument("--data", default="digits")
    p.add_argument("--data-dir")
    a, extra = p.parse_known_args()
    extra = [e for e in extra if e != "--"]
    torch.set_num_threads(1)
    print("| guide | stack | seed | accuracy | NLL | ECE | compression | pruned acc | steps/s |")
    print("|---|---|---|---|---|---|---|---|---|")
    for seed in a.seeds.split(","):
        for g in a.guides.split(","):
            for stack in a.stacks.split(","):
                argv = [*GUIDES[g], "--seed", seed, "--data", a.data, *extra]
                argv += ["--data-dir", a.data_dir] if a.data_dir else []
                argv += ["--compile", "true"] if a.compile else []
                m = one(stack, argv)
                comp = "-" if m["comp"] is None else f"{m['comp']:.1f}x"
                pruned = "-" if m["pruned"] is None else f"{m['pruned']:.4f}"
                sps = f"{m['sps']:.1f}" + (f" (compile {m['compile']:.0f} s)" if a.compile else "")
                print(
                    f"| {g} | {stack} | {seed} | {m['acc']:.4f} | {m['nll']:.4f} | "
                    f"{m['ece']:.4f} | {comp} | {pruned} | {sps} |",
                    flush=True,
                )


if __name__ == "__main__":
    main()
