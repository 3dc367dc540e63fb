"""Semi-supervised VAE M2 on MNIST (Kingma et al. 2014, table 1): `bayesdl fit ss-vae` with
100, 600, 1000 or 3000 labels (10, 60, 100, 300 per class), several draws of the labelled set,
the test error of q(y | x) beside the same network trained on the labels alone, and the
paper's M2 error.

    python benchmarks/ss_vae_mnist.py --data-dir DIR --labels 100 --draws 5 --epochs auto --out OUT
    python benchmarks/ss_vae_mnist.py --data-dir DIR --labels 600 1000 3000 --epochs 50 --out OUT
    python benchmarks/ss_vae_mnist.py --labels 100 --epochs 0.2 --out OUT   # bundled 8x8 digits

Each run goes through the CLI (what a user gets) into ``OUT/labels-N/draw-K`` (``--label-seed
K``: which images keep their label; ``--seed K``: the networks' initial weights). An epoch is one
pass over the unlabelled images in minibatches of 100 (about 600 steps on MNIST).
``--epochs auto`` is ``--steps auto``: the engine keeps the learning rate constant until its
convergence test (``inference/convergence.py``: the least-squares rise of the per-epoch ELBO over
the last third of the epochs is within two standard errors of zero) passes, then decays it over
a quarter more steps, at most 50000 steps (83 MNIST epochs); with a number of epochs the
schedule is constant and the same test is reported. Either way the result records the verdict.

A run that was stopped resumes from its checkpoint (``--resume``); a finished one is skipped.
The result of each run is ``OUT/labels-N/draw-K.json``; ``OUT/table.json`` and the printed
table are the mean and sd over the draws.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

from run_timing import loop_seconds

PAPER_M2_ERROR = {100: 11.97, 600: 4.94, 1000: 3.60, 3000: 3.92}
BATCH = 100


def n_train(a: argparse.Namespace) -> int:
    """Training images: MNIST's 60000, or the bundled digits' 1347."""
    return 60000 if a.data_dir else 1347


def fit_command(a: argparse.Namespace, labels: int, draw: int, out: Path, resume: bool) -> list:
    """``bayesdl fit ss-vae`` for one label count and draw."""
    epoch = max(1, round((n_train(a) - labels) / BATCH))
    steps = "auto" if a.epochs == "auto" else str(max(1, round(float(a.epochs) * epoch)))
    cmd = [sys.executable, "-m", "bayesdl", "fit", "ss-vae"]
    if a.data_dir:
        cmd += ["--data-dir", a.data_dir]
    cmd += ["--labels-per-class", str(labels // 10), "--label-seed", str(draw), "--seed", str(draw)]
    cmd += ["--batch-size", str(BATCH), "--steps", steps, "--log-every", str(epoch)]
    cmd += ["--checkpoint-every", str(epoch), "--threads", "1", "--quiet", "--out", str(out)]
    cmd += ["--resume"] if resume else ["--overwrite"]
    return cmd + a.extra


def finished(out: Path) -> dict | None:
    """The run's summary once it has one (``fit`` writes it at the end)."""
    try:
        return json.loads((out / "summary.json").read_text())
    except (OSError, ValueError):
        return None


def run(a: argparse.Namespace, labels: int, draw: int) -> dict | None:
    """One fit (continued if stopped); its row of the table, or None if it failed."""
    base = Path(a.out) / f"labels-{labels}"
    res, out, log = base / f"draw-{draw}.json", base / f"draw-{draw}", base / f"draw-{draw}.parts"
    if res.exists():
        return json.loads(res.read_text())
    parts = json.loads(log.read_text()) if log.exists() else []
    if finished(out) is None:
        cmd = fit_command(a, labels, draw, out, (out / "checkpoint.pt").exists())
        print(" ".join(cmd), flush=True)
        before, t0 = resource.getrusage(resource.RUSAGE_CHILDREN), time.perf_counter()
        status = subprocess.run(cmd).returncode
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
        wall = round(time.perf_counter() - t0, 1)
        parts.append({"status": status, "wall_s": wall, "cpu_s": round(cpu, 1)})
        base.mkdir(parents=True, exist_ok=True)
        log.write_text(json.dumps(parts) + "\n")
        if status != 0 or finished(out) is None:
            print(f"labels {labels} draw {draw}: status {status}; run again to resume", flush=True)
            return None
    s = finished(out)
    t = s["test"]
    loop, processes = loop_seconds(out)
    epoch = (n_train(a) - labels) / BATCH
    row = {
        "labels": labels,
        "draw": draw,
        "epochs_requested": a.epochs,
        "steps": s["steps"],
        "epochs": round(s["steps"] / epoch, 1),
        "converged": s.get("converged"),
        "convergence": s.get("convergence"),
        "final_elbo": s.get("final_elbo"),
        "m2_error_percent": round(t["error_percent"], 2),
        "baseline_error_percent": round(t["baseline_error_percent"], 2),
        "paper_m2_error_percent": PAPER_M2_ERROR.get(labels),
        "compiled": bool(s.get("compiled")),
        "threads": 1,
        "parts": parts,
        "wall_s": round(sum(p["wall_s"] for p in parts), 1),
        "cpu_s": round(sum(p["cpu_s"] for p in parts), 1),
        # every process that fitted, killed ones included (run_timing; parts.json lacks those)
        "loop_wall_s": round(loop, 1),
        "processes": processes,
    }
    row["cpu_s_per_epoch"] = round(row["cpu_s"] / max(row["epochs"], 1e-9), 2)
    res.write_text(json.dumps(row, indent=1) + "\n")
    return row


def summarise(rows: list[dict]) -> list[dict]:
    """Mean and sd of the M2 error over the draws of each label count."""
    out = []
    for n in sorted({r["labels"] for r in rows}):
        e = [r["m2_error_percent"] for r in rows if r["labels"] == n]
        b = [r["baseline_error_percent"] for r in rows if r["labels"] == n]
        out.append({
            "labels": n,
            "draws": len(e),
            "m2_error_mean": round(statistics.mean(e), 2),
            "m2_error_sd": round(statistics.stdev(e), 2) if len(e) > 1 else None,
            "baseline_error_mean": round(statistics.mean(b), 2),
            "converged": sum(bool(r["converged"]) for r in rows if r["labels"] == n),
            "paper": PAPER_M2_ERROR.get(n),
        })  # fmt: skip
    return out


def main(argv: list[str] | None = None) -> int:
    """Run the requested label counts and draws and print the table."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", help="MNIST's four IDX files; without it the bundled digits")
    p.add_argument("--labels", type=int, nargs="+", default=[100, 600, 1000, 3000])
    p.add_argument("--draws", type=int, default=1, help="draws of the labelled set (seeds)")
    p.add_argument("--epochs", default="auto", help="passes over the unlabelled set, or auto")
    p.add_argument("--out", required=True)
    p.add_argument("extra", nargs="*", help="more `bayesdl fit` options, after --")
    a = p.parse_args(argv)
    if a.epochs != "auto":
        float(a.epochs)
    rows = [run(a, n, k) for n in a.labels for k in range(a.draws)]
    done = [r for r in rows if r is not None]
    table = summarise(done)
    Path(a.out).mkdir(parents=True, exist_ok=True)
    (Path(a.out) / "table.json").write_text(json.dumps(table, indent=1) + "\n")
    print("| labels | draws | M2 error % (mean +- sd) | labels-only % | converged | paper M2 % |")
    print("|---|---|---|---|---|---|")
    for r in table:
        sd = "" if r["m2_error_sd"] is None else f" +- {r['m2_error_sd']:.2f}"
        print(
            f"| {r['labels']} | {r['draws']} | {r['m2_error_mean']:.2f}{sd} | "
            f"{r['baseline_error_mean']:.2f} | {r['converged']}/{r['draws']} | {r['paper']} |"
        )
    return 0 if len(done) == len(rows) else 1


if __name__ == "__main__":
    sys.exit(main())
