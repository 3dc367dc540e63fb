"""Dynamically binarized MNIST, VAE 784-200-200-50 (tanh) as in Burda et al. 2016: train with
`bayesdl fit vae`, then the test -log p(x) by importance sampling with K = 5000.

    python benchmarks/vae_mnist.py fit  --data-dir DIR --out RUN [--steps 25000]
    python benchmarks/vae_mnist.py eval --out RUN [--k 5000] [--n-test 1000]

`fit` runs the CLI (so this is what a user gets) and draws the learning curve from
metrics.jsonl; `eval` loads the run and estimates log p(x) on the first --n-test test images
(all 10000 with K = 5000 take about 25 minutes of one CPU core here, so the default is a
subset), plus the test ELBO on all of them.
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def cmd_fit(args: argparse.Namespace) -> None:
    """Train through the CLI and plot the learning curve."""
    cmd = [
        sys.executable,
        "-m",
        "bayesdl",
        "fit",
        "vae",
        "--data-dir",
        args.data_dir,
        "--hidden",
        "200,200",
        "--latent-dim",
        "50",
        "--batch-size",
        "128",
        "--lr",
        "1e-3",
        "--steps",
        str(args.steps),
        "--log-every",
        "468",
        "--checkpoint-every",
        "4680",
        "--out",
        args.out,
        "--overwrite",
        "--quiet",
    ]
    print(" ".join(cmd), flush=True)
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True)
    print(f"fit + summary: {time.perf_counter() - t0:.0f} s wall", flush=True)
    plot(Path(args.out))


def plot(out: Path) -> None:
    """Training ELBO per image against epochs (468 steps of 128 images)."""
    from bayesdl.workflows.figures import plt, save

    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    n = 60000
    fig, ax = plt.subplots(figsize=(6, 3.6))
    ax.plot(
        [r["step"] * 128 / n for r in rows],
        [-r["elbo"] / n for r in rows],
        label="training -ELBO (dynamic binarization)",
    )
    ax.axhline(86.76, color="grey", ls="--", label="Burda et al. VAE test -log p(x), 86.76")
    ax.set_ylim(80, 130)
    ax.set_xlabel("epoch")
    ax.set_ylabel("nats per image")
    ax.set_title("VAE 784-200-200-50 on MNIST")
    ax.legend(fontsize=8)
    print("figure:", save(fig, out, "vae_mnist_learning_curve.png"))
    last = [(r["step"], round(-r["elbo"] / n, 2), r["wall_seconds"]) for r in rows[-3:]]
    print("last rows (step, -ELBO per image, seconds):", last)


def cmd_eval(args: argparse.Namespace) -> None:
    """IW log p(x) with K samples on the first n test images; ELBO on all of them."""
    import torch

    import bayesdl.workflows  # noqa: F401
    from bayesdl.fits.svi import load_run
    from bayesdl.workflows.registry import REGISTRY

    torch.set_num_threads(args.threads)
    workflow, problem = load_run(args.out, REGISTRY)
    x = problem.extra["x_test"]
    torch.manual_seed(0)
    t0 = time.perf_counter()
    full = workflow.log_px(problem, x, 1)
    t1 = time.perf_counter()
    sub = workflow.log_px(problem, x[: args.n_test], args.k)
    t2 = time.perf_counter()
    n = min(args.n_test, len(x))
    lp, el = sub["log_px"], sub["elbo"]
    result = {
        "test_elbo_all_10000_K1": full["elbo"].mean().item(),
        "test_elbo_all_10000_K1_se": (full["elbo"].std() / math.sqrt(len(x))).item(),
        f"test_elbo_first_{n}": el.mean().item(),
        f"test_nll_first_{n}_K{args.k}": -lp.mean().item(),
        f"test_nll_first_{n}_K{args.k}_se": (lp.std() / math.sqrt(n)).item(),
        "seconds_elbo": round(t1 - t0, 1),
        "seconds_iw": round(t2 - t1, 1),
    }
    print(json.dumps(result, indent=1))
    path = Path(args.out) / f"vae_mnist_eval_K{args.k}_n{n}.json"
    path.write_text(json.dumps(result, indent=1))


def main() -> None:
    """Parse and dispatch."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    f = sub.add_parser("fit")
    f.add_argument("--data-dir", required=True)
    f.add_argument("--out", required=True)
    f.add_argument("--steps", type=int, default=25000)
    e = sub.add_parser("eval")
    e.add_argument("--out", required=True)
    e.add_argument("--k", type=int, default=5000)
    e.add_argument("--n-test", type=int, default=1000)
    e.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    {"fit": cmd_fit, "eval": cmd_eval}[args.cmd](args)


if __name__ == "__main__":
    main()
