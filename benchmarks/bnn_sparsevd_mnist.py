"""Sparse variational dropout on MNIST (Molchanov, Ashukha & Vetrov 2017): LeNet-300-100 and
LeNet-5 at the paper's recipe, through the command line a user would type (``bayesdl fit bnn``).

    python benchmarks/bnn_sparsevd_mnist.py --data-dir DIR --arch mlp --out OUT
    python benchmarks/bnn_sparsevd_mnist.py --data-dir DIR --arch lenet5 --out OUT
    python benchmarks/bnn_sparsevd_mnist.py --data-dir DIR --arch mlp --epochs 1 --out OUT  # timing

The recipe: Adam, minibatches of 100 (600 steps an epoch), 200 epochs, learning rate 1e-3
decayed linearly to 0, the KL weight warmed up linearly from 0 at epoch 5 to 1 at epoch 20,
weights with ``log alpha >= 3`` pruned at test time; the whole SVI step compiled
(``--compile``). ``--epochs E`` below 200 shortens it, keeping the warm-up at the same
fractions of training (2.5 % and 10 %): the result says ``"protocol": "shortened"``.

Each run is the folder ``OUT/ARCH-GUIDE/run``; a run that was stopped continues with
``--resume`` (the engine's checkpoints keep the parameters, the optimizer and the minibatch
position), and one that finished is skipped. The result, ``OUT/ARCH-GUIDE.json``: test error of
the pruned mean network (the paper's figure) and of the Monte Carlo predictive, NLL, ECE,
weights kept per layer, compression ``all / kept``, and the time of every part (wall and CPU
seconds; at nice 19 on a shared machine the wall time is inflated, the CPU time less so).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

from run_timing import loop_seconds

BATCH = 100
PAPER_EPOCHS = 200
#: the paper's (authors' README) error % and compression, and the dense baselines' error %
PAPER = {("mlp", "sparse-vd"): (1.92, 68.0), ("lenet5", "sparse-vd"): (0.75, 280.0)}
PAPER_DENSE = {"mlp": 1.64, "lenet5": 0.80}


def steps_per_epoch(a: argparse.Namespace) -> int:
    """Minibatches of 100 in one pass: 600 on MNIST, 13 on the bundled digits (``--digits``)."""
    return 1347 // BATCH if a.digits else 60000 // BATCH


def total_steps(a: argparse.Namespace) -> int:
    """``--epochs`` (a fraction allowed, for smoke runs) in steps."""
    return max(1, round(a.epochs * steps_per_epoch(a)))


def fit_command(a: argparse.Namespace, guide: str, out: Path, resume: bool) -> list[str]:
    """``bayesdl fit bnn`` with the paper's recipe for ``a.epochs`` epochs."""
    steps = total_steps(a)
    data = ["--data", "digits"] if a.digits else ["--data", "mnist"]
    cmd = ["fit", "bnn", *data, "--arch", a.arch, "--guide", guide]
    if a.data_dir and not a.digits:
        cmd += ["--data-dir", a.data_dir]
    if a.arch == "mlp":
        cmd += ["--hidden", "300,100"]
    cmd += ["--steps", str(steps), "--batch-size", str(BATCH), "--lr", "1e-3"]
    cmd += ["--lr-schedule", "linear", "--samples", str(a.samples)]
    cmd += ["--log-every", str(min(steps, steps_per_epoch(a)))]
    cmd += ["--checkpoint-every", str(a.checkpoint_every)]
    cmd += ["--threads", "1", "--quiet", "--out", str(out)]
    if not a.eager:
        cmd += ["--compile"]
    if guide == "sparse-vd":  # KL weight 0 until 2.5 % of training, 1 from 10 % on
        cmd += ["--kl-warmup-start", str(steps // 40), "--kl-warmup", str(steps * 3 // 40)]
    cmd += ["--resume"] if resume else ["--overwrite"]
    return cmd


def run_part(cmd: list[str]) -> dict:
    """One ``python -m bayesdl`` process: its status, wall and CPU seconds."""
    print("$ bayesdl " + " ".join(cmd), flush=True)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    status = subprocess.run([sys.executable, "-m", "bayesdl", *cmd]).returncode
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {"status": status, "wall_s": round(time.perf_counter() - t0, 1), "cpu_s": round(cpu, 1)}


def finished(out: Path, steps: int) -> bool:
    """Whether ``out`` holds a run that reached ``steps`` (its summary says so)."""
    try:
        return json.loads((out / "summary.json").read_text()).get("steps") == steps
    except (OSError, ValueError):
        return False


def result(a: argparse.Namespace, guide: str, out: Path, parts: list[dict]) -> dict:
    """The row of the table from the run's ``summary.json`` and the parts' timings."""
    s = json.loads((out / "summary.json").read_text())
    t = s["test"]
    fits = [p for p in parts if p.get("loop_wall_s")]
    loop, processes = loop_seconds(out)
    row = {
        "arch": a.arch,
        "guide": guide,
        "epochs": a.epochs,
        "data": "digits" if a.digits else "mnist",
        "protocol": "paper" if a.epochs == PAPER_EPOCHS else "shortened",
        "steps": s["steps"],
        "compiled": bool(s.get("compiled")),
        "threads": 1,
        "error_percent_mc": round(100 * (1 - t["accuracy"]), 3),
        "samples": t["samples"],
        "nll": t["nll"],
        "ece": t["ece"],
        "parts": parts,
        "wall_s": round(sum(p["wall_s"] for p in parts), 1),
        "cpu_s": round(sum(p["cpu_s"] for p in parts), 1),
        # every process that fitted, killed ones included (run_timing; parts.json lacks those)
        "loop_wall_s": round(loop, 1),
        "processes": processes,
        "paper": PAPER.get((a.arch, guide)),
        "paper_dense_error_percent": PAPER_DENSE[a.arch],
    }
    row["wall_s_per_epoch"] = round(row["loop_wall_s"] / a.epochs, 2)
    # a killed process took its CPU seconds with it: no per-epoch CPU figure then
    row["cpu_s_per_epoch"] = None if processes > len(fits) else round(row["cpu_s"] / a.epochs, 2)
    if "sparsity" in s:
        row["error_percent"] = round(100 * (1 - t["accuracy_pruned_mean_network"]), 3)
        row["compression"] = s["sparsity"]["compression"]
        row["per_layer"] = s["sparsity"]["per_layer"]
    else:
        row["error_percent"] = row["error_percent_mc"]
    return row


def run(a: argparse.Namespace, guide: str) -> dict | None:
    """Fit (or continue) one run to the end and write its result; None if it failed."""
    base = Path(a.out) / f"{a.arch}-{guide}"
    if a.epochs != PAPER_EPOCHS:
        base = Path(a.out) / f"{a.arch}-{guide}-{a.epochs:g}ep"
    res, out, log = base.with_suffix(".json"), base / "run", base / "parts.json"
    if res.exists():
        return json.loads(res.read_text())
    base.mkdir(parents=True, exist_ok=True)
    parts = json.loads(log.read_text()) if log.exists() else []
    steps = total_steps(a)
    if not finished(out, steps):
        part = run_part(fit_command(a, guide, out, (out / "checkpoint.pt").exists()))
        if part["status"] == 0 and finished(out, steps):
            part["loop_wall_s"] = json.loads((out / "summary.json").read_text())["wall_seconds"]
        parts.append(part)
        log.write_text(json.dumps(parts, indent=1) + "\n")
        if part["status"] != 0:
            print(f"{base.name}: stopped with status {part['status']}; run again to resume")
            return None
    row = result(a, guide, out, parts)
    res.write_text(json.dumps(row, indent=1) + "\n")
    print(json.dumps({k: v for k, v in row.items() if k not in ("parts", "per_layer")}), flush=True)
    return row


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", help="MNIST's four IDX files (or $BAYESDL_MNIST_DIR)")
    p.add_argument("--arch", choices=("mlp", "lenet5"), default="mlp")
    p.add_argument("--epochs", type=float, default=PAPER_EPOCHS)
    p.add_argument("--digits", action="store_true", help="the bundled 8x8 digits (smoke runs)")
    p.add_argument("--guides", default="sparse-vd", help="comma-separated: sparse-vd,mle")
    p.add_argument("--samples", type=int, default=10, help="draws of the MC predictive")
    p.add_argument("--checkpoint-every", type=int, default=3000, help="steps")
    p.add_argument("--eager", action="store_true", help="without --compile")
    p.add_argument("--out", required=True)
    a = p.parse_args(argv)
    if a.digits and a.arch != "mlp":
        p.error("--digits: 8x8 images, --arch mlp only")
    rows = [run(a, g) for g in a.guides.split(",")]
    return 0 if all(r is not None for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
