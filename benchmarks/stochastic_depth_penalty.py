"""Accuracy against mean depth as ``--depth-penalty`` varies, beside fixed-depth networks.

    nice -n 10 python benchmarks/stochastic_depth_penalty.py --out docs/figures \
        --penalties 0,0.05,0.2,1 --steps 800

Each point is one `bayesdl fit stochastic-depth` (digits, same seed and settings); the fixed-depth
networks are `--fixed-depth d` for d = 1..L. Writes ``stochastic_depth_penalty.png`` and
``stochastic_depth_penalty.json`` into ``--out`` and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bayesdl.fits.svi import fit_problem  # noqa: E402
from bayesdl.workflows.figures import plt, save  # noqa: E402
from bayesdl.workflows.fit_options import from_argv  # noqa: E402
from bayesdl.workflows.registry import REGISTRY  # noqa: E402


def run(argv: list[str]) -> dict:
    """Fit the model with ``argv`` (options of `bayesdl fit stochastic-depth`) and evaluate it."""
    workflow_cls = REGISTRY["stochastic-depth"]
    args = from_argv(workflow_cls, argv, "bench")
    workflow = workflow_cls(args)
    problem = workflow.build()
    t0 = time.perf_counter()
    fit_problem(problem, args.engine, progress=False)
    result = workflow.evaluate(problem, Path("."))
    result["fit_seconds"] = time.perf_counter() - t0
    return result


def main() -> None:
    """Run the sweep and draw the figure."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="docs/figures")
    p.add_argument("--penalties", default="0,0.05,0.2,1")
    p.add_argument("--steps", type=int, default=800)
    p.add_argument("--blocks", type=int, default=8)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--extra", default="", help="more fit options, space-separated")
    a = p.parse_args()
    torch.set_num_threads(1)
    common = [
        "--steps",
        str(a.steps),
        "--blocks",
        str(a.blocks),
        "--seed",
        str(a.seed),
        *a.extra.split(),
    ]
    rows = []
    for lam in [float(v) for v in a.penalties.split(",")]:
        r = run([*common, "--depth-penalty", str(lam)])
        t = r["test"]
        rows.append(
            {
                "kind": "latent",
                "penalty": lam,
                **{k: t[k] for k in t},
                "timing": r["timing"],
                "fit_seconds": r["fit_seconds"],
            }
        )
        print(
            f"penalty {lam}: early exit acc {t['early_exit_q_mode']['accuracy']:.4f} "
            f"mean depth {t['early_exit_q_mode']['mean_depth']:.2f}, full-depth read-out "
            f"{t['full_depth_readout']['accuracy']:.4f}",
            flush=True,
        )
    for d in range(1, a.blocks + 1):
        r = run([*common, "--fixed-depth", str(d)])
        t = r["test"]["early_exit_q_mode"]  # with --fixed-depth every input runs d blocks
        rows.append(
            {
                "kind": "fixed",
                "depth": d,
                "accuracy": t["accuracy"],
                "nll": t["nll"],
                "fit_seconds": r["fit_seconds"],
            }
        )
        print(f"fixed depth {d}: acc {rows[-1]['accuracy']:.4f}", flush=True)

    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "stochastic_depth_penalty.json").write_text(json.dumps(rows, indent=1) + "\n")
    fig, ax = plt.subplots(figsize=(6, 4))
    fixed = [r for r in rows if r["kind"] == "fixed"]
    ax.plot(
        [r["depth"] for r in fixed],
        [r["accuracy"] for r in fixed],
        "s-",
        color="grey",
        label="fixed depth d (trained at d)",
    )
    latent = [r for r in rows if r["kind"] == "latent"]
    for rule, marker, label in (
        ("early_exit_q_mode", "o", "latent z: early exit at mode of q(z|x)"),
        ("joint_mode", "^", "latent z: mode of p(y, z | x)"),
    ):
        xs = [r[rule]["mean_depth"] for r in latent]
        ys = [r[rule]["accuracy"] for r in latent]
        ax.plot(xs, ys, marker, ls="none", ms=8, label=label)
        if rule == "early_exit_q_mode":
            for r, x_, y_ in zip(latent, xs, ys, strict=True):
                ax.annotate(
                    f"λ={r['penalty']:g}",
                    (x_, y_),
                    textcoords="offset points",
                    xytext=(5, -10),
                    fontsize=7,
                )
    ax.set_xlabel("mean depth (blocks run per test input)")
    ax.set_ylabel("test accuracy (digits)")
    ax.set_title("accuracy against depth as the depth penalty λ varies")
    ax.legend(fontsize=7)
    save(fig, out, "stochastic_depth_penalty.png")

    print(
        "\n| model | mean depth | early-exit acc | joint-mode acc | predictive acc "
        "| full-depth read-out acc |"
    )
    print("|---|---|---|---|---|---|")
    for r in latent:
        print(
            f"| λ = {r['penalty']:g} | {r['early_exit_q_mode']['mean_depth']:.2f} | "
            f"{r['early_exit_q_mode']['accuracy']:.4f} | {r['joint_mode']['accuracy']:.4f} | "
            f"{r['predictive_prior']['accuracy']:.4f} | {r['full_depth_readout']['accuracy']:.4f} |"
        )
    for r in fixed:
        print(f"| fixed d = {r['depth']} | {r['depth']} | {r['accuracy']:.4f} | | | |")


if __name__ == "__main__":
    main()
