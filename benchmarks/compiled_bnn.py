"""``--compile`` on a user's network made Bayesian (``bayesdl.bnn.bayesian``): steps per second
eager against compiled, and the fitted classifiers' test accuracy and NLL (they must agree).

    OMP_NUM_THREADS=1 python benchmarks/compiled_bnn.py [--steps 600] [--out /tmp/compiled_bnn]

Digits (bundled, 1347 train / 450 test), MLP 64-100-10, minibatches of 128, prior scale 30,
100 predictive draws; one run per guide and mode, seed 0.
"""

from __future__ import annotations

import argparse
import json
import time
import warnings
from pathlib import Path

import torch
from torch import nn

import bayesdl
from bayesdl import bnn
from bayesdl.datasets.bundled import digits
from bayesdl.workflows import metrics


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=600)
    p.add_argument("--guides", default="meanfield,flipout")
    p.add_argument("--out", default="/tmp/compiled_bnn")
    args = p.parse_args()
    warnings.simplefilter("ignore")
    split = digits()
    data = {"x": split.x_train, "y": split.y_train}
    print("| guide | compiled | steps / s | compile s | accuracy | NLL |")
    print("|---|---|---|---|---|---|")
    for guide in args.guides.split(","):
        for compiled in (False, True):
            torch.manual_seed(0)
            net = nn.Sequential(nn.Linear(64, 100), nn.ReLU(), nn.Linear(100, 10))
            out = Path(args.out) / f"{guide}-{'compiled' if compiled else 'eager'}"
            bnet = bnn.bayesian(net, likelihood="categorical", guide=guide, prior_scale=30.0)
            t = time.perf_counter()
            post = bayesdl.fit(
                bnet, data=data, steps=args.steps, batch_size=128, progress=False,
                compile=compiled, seed=0, out=out, overwrite=True,
            )  # fmt: skip
            wall = time.perf_counter() - t
            s = json.loads((out / "summary.json").read_text())
            u = bnn.uncertainty(post, split.x_test, num_samples=100)
            print(
                f"| {guide} | {s.get('compiled')} | {s.get('steps_per_second'):.0f} | "
                f"{s.get('compile_seconds', 0):.1f} | "
                f"{metrics.accuracy(u['probs'], split.y_test):.4f} | "
                f"{metrics.nll(u['probs'], split.y_test):.4f} |  <!-- fit wall {wall:.1f} s -->"
            )


if __name__ == "__main__":
    main()
