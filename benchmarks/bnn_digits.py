"""Every ``bnn`` guide on the bundled digits with the defaults (MLP 64-100-10, 3000 minibatches
of 128, Adam 1e-2, KL warm-up 500 steps, M = 100 posterior samples), through the command line:
test accuracy, NLL, ECE, Brier, mutual information, OOD AUROC of entropy, sparsity, and the
learned dropout rate p per layer (concrete-dropout, gaussian-dropout).

    python benchmarks/bnn_digits.py --out runs/bnn_digits [--seeds 0,1] [--only dropout,...]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RUNS = {
    "mle": ["--guide", "mle"],
    "map": ["--guide", "map"],
    "meanfield": ["--guide", "meanfield"],
    "meanfield (sampled weights)": ["--guide", "meanfield", "--no-local-reparam"],
    "dropout": ["--guide", "dropout"],
    "sparse-vd": ["--guide", "sparse-vd"],
    "mc-dropout": ["--guide", "mc-dropout"],
    "dropconnect": ["--guide", "dropconnect"],
    "concrete-dropout": ["--guide", "concrete-dropout"],
    "gaussian-dropout": ["--guide", "gaussian-dropout"],
    "gaussian-dropout (per weight)": ["--guide", "gaussian-dropout", "--alpha-per", "weight"],
}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--out", default="runs/bnn_digits")
    p.add_argument("--seeds", default="0")
    p.add_argument("--only", help="comma-separated rows to run (default all)")
    a = p.parse_args()
    runs = {k: v for k, v in RUNS.items() if not a.only or k in a.only.split(",")}
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    print(
        "| guide | seed | accuracy | NLL | ECE | Brier | MI | AUROC noise / inverted / flipped "
        "| compression | learned p per layer | fit s |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for seed in a.seeds.split(","):
        for name, argv in runs.items():
            out = Path(a.out) / f"{name.replace(' ', '_')}-{seed}"
            cmd = ["fit", "bnn", *argv, "--seed", seed, "--quiet", "--overwrite", "--out", str(out)]
            print(f"<!-- bayesdl {' '.join(cmd)} -->", flush=True)
            subprocess.run(
                [sys.executable, "-m", "bayesdl", *cmd],
                check=True,
                env=env,
                stdout=subprocess.DEVNULL,
            )
            s = json.loads((out / "summary.json").read_text())
            t, o = s["test"], s["ood"]
            kinds = ("noise", "inverted", "flipped")
            auc = " / ".join(f"{o[k]['auroc_entropy']:.3f}" for k in kinds)
            comp = f"{s['sparsity']['compression']:.1f}x" if "sparsity" in s else "-"
            net = s.get("bayesian_net", {})
            rates = net.get("dropout_rates", {}) if net.get("dropout_rates_learned") else {}
            learned = " / ".join(f"{v:.3f}" for v in rates.values()) or "-"
            print(
                f"| {name} | {seed} | {t['accuracy']:.4f} | {t['nll']:.4f} | {t['ece']:.4f} | "
                f"{t['brier']:.4f} | {t['mutual_information']:.3f} | {auc} | {comp} | {learned} | "
                f"{s['wall_seconds']:.0f} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
