"""Sparse variational dropout on MNIST, LeNet-300-100, against the dense MLE trained the same
way: test error, compression and wall time, through the command line a user would type.

    BAYESDL_MNIST_DIR=/path/to/mnist python benchmarks/bnn_sparsevd_mnist.py --epochs 30 --out runs/

The paper trains 200 epochs (Adam, batch 100, lr 1e-3 decayed linearly to 0, KL weight warmed
up over about epochs 5-20); ``--epochs`` shortens that, keeping the warm-up at the same
fractions of training (start at 2.5 %, full at 10 %).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
STEPS_PER_EPOCH = 60000 // 100


def run(cmd: list[str]) -> float:
    print("$ " + " ".join(cmd), flush=True)
    t0 = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "bayesdl", *cmd],
        check=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    return time.perf_counter() - t0


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--samples", type=int, default=10, help="posterior samples of the predictive")
    p.add_argument("--guides", default="sparse-vd,mle")
    p.add_argument("--out", default="runs/bnn_mnist")
    a = p.parse_args()
    steps = a.epochs * STEPS_PER_EPOCH
    warm_start, warm = max(1, steps // 40), max(1, steps * 3 // 40)
    for guide in a.guides.split(","):
        out = Path(a.out) / guide
        cmd = [
            "fit",
            "bnn",
            "--data",
            "mnist",
            "--arch",
            "mlp",
            "--hidden",
            "300,100",
            "--guide",
            guide,
            "--steps",
            str(steps),
            "--batch-size",
            "100",
            "--lr",
            "1e-3",
            "--lr-schedule",
            "linear",
            "--samples",
            str(a.samples),
            "--log-every",
            "600",
            "--quiet",
            "--overwrite",
            "--out",
            str(out),
        ]
        if guide == "sparse-vd":
            cmd += ["--kl-warmup-start", str(warm_start), "--kl-warmup", str(warm)]
        wall = run(cmd)
        s = json.loads((out / "summary.json").read_text())
        t = s["test"]
        line = {
            "guide": guide,
            "epochs": a.epochs,
            "fit_seconds": s["wall_seconds"],
            "command_seconds": round(wall, 1),
            "accuracy_mc": t["accuracy"],
            "nll": t["nll"],
            "ece": t["ece"],
            "samples": t["samples"],
        }
        if "sparsity" in s:
            line["accuracy_pruned_mean_network"] = t["accuracy_pruned_mean_network"]
            line["compression"] = s["sparsity"]["compression"]
            per = s["sparsity"]["per_layer"]
            line["per_layer_sparsity"] = [round(x["sparsity"], 4) for x in per]
        print(json.dumps(line), flush=True)


if __name__ == "__main__":
    main()
