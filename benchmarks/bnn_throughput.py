"""Time per epoch of ``fit bnn`` (the shared engine: Pyro's Trace_ELBO + our loop) against a
hand-written PyTorch loop of the same network and loss, side by side in one process.

    BAYESDL_MNIST_DIR=/path/to/mnist python benchmarks/bnn_throughput.py [--epochs 2] [--repeats 3]

MNIST, LeNet-300-100, batch 128, Adam; the hand loop draws a permutation per epoch, indexes
the minibatch, computes ``N/B * cross_entropy_sum + KL`` and steps, exactly what the model's
ELBO is. Each measurement alternates the two, the median over repeats is reported. (Since
issue 20 removed the layer classes, the hand loop is the point network's: ``--guides mle``.)
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
import time
from pathlib import Path

import pyro
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bayesdl.fits.svi import fit_problem  # noqa: E402
from bayesdl.workflows.bnn import BNN  # noqa: E402
from bayesdl.workflows.fit_options import from_argv  # noqa: E402

BATCH = 128


def build(guide: str):
    args = from_argv(
        BNN,
        [
            "--data",
            "mnist",
            "--guide",
            guide,
            "--batch-size",
            str(BATCH),
            "--log-every",
            "100000",
            "--checkpoint-every",
            "1000000",
        ],
    )
    return args, BNN(args).build()


def time_engine(guide: str, epochs: int) -> float:
    args, problem = build(guide)
    n = problem.data_size
    pyro.clear_param_store()
    config = dataclasses.replace(args.engine, steps=epochs * (n // BATCH))
    r = fit_problem(problem, config, progress=False)
    return r.wall_seconds / epochs  # the loop only (set-up excluded)


def time_plain(guide: str, epochs: int) -> float:
    if guide != "mle":  # the Bayesian guides' hand loops were over the removed layer classes
        raise SystemExit("the hand-written loop is the point network's: --guides mle")
    _, problem = build(guide)
    net = problem.model.net
    x, y = problem.data["x"], problem.data["y"]
    n = len(y)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    t0 = time.perf_counter()
    for _ in range(epochs):
        perm = torch.randperm(n)
        for b in range(n // BATCH):
            idx = perm[b * BATCH : (b + 1) * BATCH]
            loss = F.cross_entropy(net(x[idx]), y[idx], reduction="sum") * (n / BATCH)
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
    return (time.perf_counter() - t0) / epochs


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--guides", default="mle")
    p.add_argument("--threads", type=int, default=1)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    print(
        f"| guide | plain PyTorch s/epoch | fit bnn s/epoch | ratio |  (threads {a.threads}, "
        f"{a.epochs} epochs x {a.repeats} repeats, medians)"
    )
    print("|---|---|---|---|")
    for guide in a.guides.split(","):
        plain, engine = [], []
        for _ in range(a.repeats):
            plain.append(time_plain(guide, a.epochs))
            engine.append(time_engine(guide, a.epochs))
        mp, me = statistics.median(plain), statistics.median(engine)
        print(f"| {guide} | {mp:.2f} | {me:.2f} | {me / mp:.3f} |", flush=True)
        print(
            f"<!-- {guide}: plain {[round(v, 3) for v in plain]} engine "
            f"{[round(v, 3) for v in engine]} -->",
            flush=True,
        )


if __name__ == "__main__":
    main()
