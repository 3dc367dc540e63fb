"""The tables of docs/full_protocols.md from the result files of the full-protocol benchmarks.

    python benchmarks/full_protocol_tables.py /work/bench25 > tables.md

Reads ``ROOT/uci/SET/METHOD/split-K.json`` (benchmarks/uci.py), ``ROOT/sparsevd/*.json``
(bnn_sparsevd_mnist.py), ``ROOT/calibration/*.json`` (bnn_calibration_mnist.py) and
``ROOT/m2*/labels-N/draw-K.json`` (ss_vae_mnist.py), whichever exist, and prints Markdown: each
table says how many splits, runs or draws it holds, so a partial result is never taken for the
full protocol.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from uci import SETS  # noqa: E402

#: Gal's MC dropout (grid search, the corrected re-run) and PBP: (RMSE, LL), from the UCI README
REFERENCE = {
    "bostonHousing": ((2.90, 0.18, -2.40, 0.04), (3.01, -2.57)),
    "concrete": ((4.82, 0.16, -2.93, 0.02), (5.67, -3.16)),
    "energy": ((0.54, 0.06, -1.21, 0.01), (1.80, -2.04)),
    "kin8nm": ((0.08, 0.00, 1.14, 0.01), None),
    "naval-propulsion-plant": ((0.00, 0.00, 4.45, 0.00), None),
    "power-plant": ((4.01, 0.04, -2.80, 0.01), None),
    "wine-quality-red": ((0.62, 0.01, -0.93, 0.01), (0.64, -0.97)),
    "yacht": ((0.67, 0.05, -1.25, 0.01), (1.02, -1.63)),
}
UCI_METHODS = ("meanfield", "flipout", "mc-dropout", "nuts")


def _load(paths) -> list[dict]:
    out = []
    for p in sorted(paths):
        try:
            out.append(json.loads(p.read_text()))
        except (OSError, ValueError):
            pass
    return out


def mean_se(v: list[float]) -> tuple[float, float]:
    """Mean and standard error ``sd / sqrt(n)`` (0 for one value)."""
    m = statistics.mean(v)
    return m, (statistics.stdev(v) / math.sqrt(len(v)) if len(v) > 1 else 0.0)


def _fmt(v: list[float], digits: int) -> str:
    m, se = mean_se(v)
    return f"{m:.{digits}f} ± {se:.{digits}f}"


def uci_rows(root: Path) -> dict[str, dict[str, list[dict]]]:
    """``{set: {method: [split rows]}}``."""
    out: dict[str, dict[str, list[dict]]] = {}
    for s in SETS:
        for m in UCI_METHODS:
            rows = _load((root / "uci" / s / m).glob("split-*.json"))
            if rows:
                out.setdefault(s, {})[m] = rows
    return out


def uci_table(root: Path) -> list[str]:
    """Test RMSE and LL (mean ± se over the splits done) beside Gal's MC dropout and PBP."""
    data = uci_rows(root)
    if not data:
        return []
    digits = {"naval-propulsion-plant": 4, "kin8nm": 3}
    lines = [
        "| data set | method | splits | test RMSE | test LL | reference MC dropout (Gal) "
        "RMSE / LL | PBP RMSE / LL | LL above Gal's |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for s, by in data.items():
        gal, pbp = REFERENCE[s]
        d = digits.get(s, 2)
        for m, rows in by.items():
            rmse = [r["test_rmse"] for r in rows]
            ll = [r["test_ll"] for r in rows]
            above = "yes" if statistics.mean(ll) > gal[2] else "no"
            ref = f"{gal[0]:.2f} ± {gal[1]:.2f} / {gal[2]:.2f} ± {gal[3]:.2f}"
            p = f"{pbp[0]:.2f} / {pbp[1]:.2f}" if pbp else ""
            lines.append(
                f"| {s} | {m} | {len(rows)} | {_fmt(rmse, d)} | {_fmt(ll, 2)} | {ref} | {p} "
                f"| {above} |"
            )

    def beats(s: str, by: dict) -> bool:
        vi = [m for m in by if m in ("meanfield", "flipout")]
        return any(statistics.mean(r["test_ll"] for r in by[m]) > REFERENCE[s][0][2] for m in vi)

    wins = [s for s, by in data.items() if beats(s, by)]
    lines += [
        "",
        f"Sets where mean field or Flipout has a higher mean test LL than Gal's MC dropout: "
        f"{len(wins)} of {len(data)} measured ({', '.join(wins) or 'none'}).",
    ]
    return lines


def uci_choices(root: Path) -> list[str]:
    """How often each configuration was chosen on the validation parts."""
    data = uci_rows(root)
    lines = ["| data set | method | configurations chosen (count over splits) |", "|---|---|---|"]
    for s, by in data.items():
        for m, rows in by.items():
            if m == "nuts":
                continue
            counts: dict[str, int] = {}
            for r in rows:
                key = ", ".join(f"{k} {v}" for k, v in r["chosen"].items())
                counts[key] = counts.get(key, 0) + 1
            text = "; ".join(f"{k}: {n}" for k, n in sorted(counts.items(), key=lambda t: -t[1]))
            lines.append(f"| {s} | {m} | {text} |")
    return lines if len(lines) > 2 else []


def sparsevd_table(root: Path) -> list[str]:
    rows = _load((root / "sparsevd").glob("*.json"))
    if not rows:
        return []
    lines = [
        "| net | guide | epochs (protocol) | error % (pruned mean net) | error % (MC) | "
        "compression | kept per layer | paper error % / compression |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        per = " / ".join(f"{x['kept']}/{x['weights']}" for x in r.get("per_layer", []))
        comp = f"{r['compression']:.1f}x" if "compression" in r else "1x"
        dense = f"dense {r['paper_dense_error_percent']}"
        paper = f"{r['paper'][0]} / {r['paper'][1]:g}x" if r.get("paper") else dense
        lines.append(
            f"| {r['arch']} | {r['guide']} | {r['epochs']} ({r['protocol']}) | "
            f"{r['error_percent']:.2f} | {r['error_percent_mc']:.2f} | {comp} | {per} | {paper} |"
        )
    return lines


def calibration_table(root: Path) -> list[str]:
    rows = _load((root / "calibration").glob("*.json"))
    if not rows:
        return []
    shifts = ("rotated", "inverted", "noise")
    lines = [
        "| method | epochs | accuracy | NLL | ECE | Brier | AUROC entropy rot / inv / noise "
        "| AUROC MI rot / inv / noise |",
        "|---|---|---|---|---|---|---|---|",
    ]
    order = {m: i for i, m in enumerate(("meanfield", "flipout", "mc-dropout", "map", "ensemble"))}
    for r in sorted(rows, key=lambda r: order.get(r["method"], 9)):
        h = " / ".join(f"{r[f'auroc_entropy_{k}']:.3f}" for k in shifts)
        mi = " / ".join(f"{r[f'auroc_mi_{k}']:.3f}" for k in shifts if f"auroc_mi_{k}" in r)
        lines.append(
            f"| {r['method']} | {r['epochs']} | {r['accuracy']:.4f} | {r['nll']:.4f} | "
            f"{r['ece']:.4f} | {r['brier']:.4f} | {h} | {mi or '-'} |"
        )
    return lines


def m2_rows(root: Path) -> list[dict]:
    return _load(root.glob("m2*/labels-*/draw-*.json"))


def m2_table(root: Path) -> list[str]:
    rows = m2_rows(root)
    if not rows:
        return []
    lines = [
        "| labels | draws | epochs | M2 error % (mean ± sd) | labels-only error % | "
        "converged (engine's test) | paper M2 % |",
        "|---|---|---|---|---|---|---|",
    ]
    for n in sorted({r["labels"] for r in rows}):
        g = [r for r in rows if r["labels"] == n]
        e = [r["m2_error_percent"] for r in g]
        sd = f" ± {statistics.stdev(e):.2f}" if len(e) > 1 else ""
        ep = "/".join(f"{r['epochs']:g}" for r in g)
        conv = sum(bool(r["converged"]) for r in g)
        base = statistics.mean(r["baseline_error_percent"] for r in g)
        lines.append(
            f"| {n} | {len(g)} | {ep} | {statistics.mean(e):.2f}{sd} | {base:.2f} | "
            f"{conv}/{len(g)} | {g[0]['paper_m2_error_percent']} |"
        )
    return lines


def time_table(root: Path) -> list[str]:
    """Epochs, seconds per epoch (wall and CPU), totals, compiled or not, threads."""
    lines = [
        "| row | epochs | wall s / epoch (loop) | CPU s / epoch | total CPU s | total wall s "
        "| compiled | threads |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for s, by in uci_rows(root).items():
        for m, rows in by.items():
            cpu = sum(r["total_cpu_s"] for r in rows)
            wall = sum(r["total_wall_s"] for r in rows)
            ep = rows[0]["schedule"].get("epochs", "")
            comp = rows[0]["final"]["timing"].get("compiled")
            lines.append(
                f"| UCI {s} {m}, {len(rows)} splits (every fit of the grid) | {ep} per fit | "
                f"| | {cpu:.0f} | {wall:.0f} | {comp} | {rows[0]['threads']} |"
            )
    for r in _load((root / "sparsevd").glob("*.json")):
        # a process killed before it wrote its record took its CPU seconds with it
        cpu = "n/a" if r.get("cpu_s_per_epoch") is None else f"{r['cpu_s']:.0f}"
        lines.append(
            f"| sparse VD {r['arch']} {r['guide']} | {r['epochs']} | {r['wall_s_per_epoch']} "
            f"| {r['cpu_s_per_epoch'] or 'n/a'} | {cpu} | {max(r['wall_s'], r['loop_wall_s']):.0f} "
            f"| {r['compiled']} | {r['threads']} |"
        )
    for r in _load((root / "calibration").glob("*.json")):
        n = len(r["fits"]) * r["epochs"]
        lines.append(
            f"| calibration {r['method']} ({len(r['fits'])} fit(s)) | {r['epochs']} each | "
            f"{r['loop_wall_s'] / n:.1f} | {r['cpu_s'] / n:.1f} | {r['cpu_s']:.0f} | "
            f"{sum(f['wall_s'] for f in r['fits']):.0f} | "
            f"{all(f['compiled'] for f in r['fits'])} | {r['threads']} |"
        )
    for r in m2_rows(root):
        lines.append(
            f"| M2 {r['labels']} labels, draw {r['draw']} | {r['epochs']:g} | "
            f"{(r['loop_wall_s'] or 0) / max(r['epochs'], 1e-9):.1f} | {r['cpu_s_per_epoch']} | "
            f"{r['cpu_s']:.0f} | {r['wall_s']:.0f} | {r['compiled']} | {r['threads']} |"
        )
    return lines if len(lines) > 2 else []


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("root", nargs="?", default="/work/bench25", help="the results folder")
    a = p.parse_args(argv)
    root = Path(a.root)
    sections = [
        ("UCI regression, 20 splits", uci_table(root)),
        ("UCI: configurations chosen on the validation parts", uci_choices(root)),
        ("Sparse variational dropout, MNIST", sparsevd_table(root)),
        ("Calibration, LeNet-5 on MNIST", calibration_table(root)),
        ("Semi-supervised M2, MNIST", m2_table(root)),
        ("Where the time goes", time_table(root)),
    ]
    for title, lines in sections:
        if lines:
            print(f"### {title}\n")
            print("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
