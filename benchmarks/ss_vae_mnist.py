"""Semi-supervised VAE M2 on MNIST (Kingma et al. 2014, table 1): `bayesdl fit ss-vae` with
100, 600, 1000 or 3000 labels (10, 60, 100, 300 per class), the test error of q(y | x) beside
the same network trained on the labels alone, and the paper's M2 error.

    python benchmarks/ss_vae_mnist.py --data-dir DIR --labels 100 600 --epochs 5 --out runs/ssvae

Each run goes through the CLI (what a user gets) into OUT/labels-N; the table is printed and
written to OUT/table.json. An epoch is one pass over the unlabelled images in minibatches of
100 (about 600 steps); the paper trained for far longer.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

PAPER_M2_ERROR = {100: 11.97, 600: 4.94, 1000: 3.60, 3000: 3.92}
N_TRAIN, BATCH = 60000, 100


def run(data_dir: str, labels: int, epochs: float, out: Path, extra: list[str]) -> dict:
    """One fit; returns its row of the table."""
    steps = max(1, round(epochs * (N_TRAIN - labels) / BATCH))
    cmd = [
        sys.executable,
        "-m",
        "bayesdl",
        "fit",
        "ss-vae",
        "--data-dir",
        data_dir,
        "--labels-per-class",
        str(labels // 10),
        "--batch-size",
        str(BATCH),
        "--steps",
        str(steps),
        "--log-every",
        "100",
        "--checkpoint-every",
        "5000",
        "--out",
        str(out),
        "--overwrite",
        "--quiet",
        *extra,
    ]
    print(" ".join(cmd), flush=True)
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True)
    wall = time.perf_counter() - t0
    s = json.loads((out / "summary.json").read_text())
    t = s["test"]
    return {
        "labels": labels,
        "epochs": epochs,
        "steps": s["steps"],
        "fit_seconds": s["wall_seconds"],
        "wall_seconds": round(wall, 1),
        "m2_error_percent": round(t["error_percent"], 2),
        "baseline_error_percent": round(t["baseline_error_percent"], 2),
        "paper_m2_error_percent": PAPER_M2_ERROR.get(labels),
    }


def main() -> None:
    """Run the requested label counts and print the table."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", required=True, help="folder of the four MNIST IDX files")
    p.add_argument("--labels", type=int, nargs="+", default=[100, 600, 1000, 3000])
    p.add_argument("--epochs", type=float, default=5.0, help="passes over the unlabelled set")
    p.add_argument("--out", default="runs/ss_vae_mnist")
    p.add_argument("extra", nargs="*", help="more `bayesdl fit` options, after --")
    a = p.parse_args()
    out = Path(a.out)
    rows = [run(a.data_dir, n, a.epochs, out / f"labels-{n}", a.extra) for n in a.labels]
    out.mkdir(parents=True, exist_ok=True)
    (out / "table.json").write_text(json.dumps(rows, indent=1) + "\n")
    print("| labels | epochs | fit s | M2 error % | labels-only error % | paper M2 % |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['labels']} | {r['epochs']:g} | {r['fit_seconds']:.0f} | "
            f"{r['m2_error_percent']:.2f} | {r['baseline_error_percent']:.2f} | "
            f"{r['paper_m2_error_percent']} |"
        )


if __name__ == "__main__":
    main()
