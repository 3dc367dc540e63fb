"""Calibration of Bayesian LeNet-5s on MNIST: accuracy, NLL, ECE, Brier and out-of-distribution
AUROC of mean field, Flipout, MC dropout, MAP and a deep ensemble of 5 MAP networks, each
``bayesdl.bnn.bayesian(lenet5, ...)`` fitted by ``bayesdl.fit`` (compiled).

    python benchmarks/bnn_calibration_mnist.py --data-dir DIR --epochs 20 --out OUT
    python benchmarks/bnn_calibration_mnist.py --synthetic --epochs 1 --out OUT   # smoke

The network is the classic LeNet-5 (LeCun et al. 1998, as in google's uncertainty-baselines):
conv 6@5x5 (padded), max-pool, conv 16@5x5, max-pool, dense 120, 84, 10, ReLU. Every fit:
minibatches of 128, Adam 1e-3 decayed linearly to 0, ``--epochs`` passes, the prior
``N(0, prior_scale^2 / fan_in)`` (``--prior-scale``, 1: pre-activations of unit scale), the
full ELBO (the KL weight warmed up from 0 to 1 over the first epoch, then 1). MC dropout drops
the input channels or units of every layer but the first convolution with p = ``--dropout``
(that layer's one input channel is the whole image; it stays a point estimate). MAP is
ensemble member 0; the ensemble averages its members' softmax outputs.

Scores on the 10000 test images with ``--samples`` predictive draws: accuracy, NLL, ECE (15
equal-width bins), Brier; AUROC of telling test digits from shifted inputs by the predictive
entropy and by the mutual information ``H[E p] - E H[p]`` (zero for MAP), against three shifts
built offline from the test images: rotated by 90 degrees, inverted (``1 - x``) and uniform
noise. Each finished row is ``OUT/METHOD.json``; a fit stopped half-way resumes from its run
folder ``OUT/runs/NAME`` (its ``data.npz`` copy of the training set is removed afterwards).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
import warnings
from pathlib import Path

import torch
from torch import nn

METHODS = ("meanfield", "flipout", "mc-dropout", "map", "ensemble")
BATCH = 128
#: uncertainty-baselines' LeNet-5 on MNIST (anchors.md): plain VI and a 10-model ensemble
REFERENCE = {"vi (uncertainty-baselines)": (0.048, 0.010), "ensemble of 10 (u-b)": (0.016, 0.005)}


def lenet5(seed: int) -> nn.Sequential:
    """Classic LeNet-5 on 28 x 28 images given flattened (784 inputs)."""
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Unflatten(1, (1, 28, 28)),
        nn.Conv2d(1, 6, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(6, 16, 5), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
        nn.Linear(400, 120), nn.ReLU(), nn.Linear(120, 84), nn.ReLU(), nn.Linear(84, 10),
    )  # fmt: skip


def shifted(x: torch.Tensor) -> dict[str, torch.Tensor]:
    """Out-of-distribution inputs made from the test images ``x [N, 784]``."""
    g = torch.Generator().manual_seed(1234)
    img = x.reshape(-1, 28, 28)
    return {
        "rotated": torch.rot90(img, 1, (1, 2)).reshape(x.shape).contiguous(),
        "inverted": 1 - x,
        "noise": torch.rand(x.shape, generator=g),
    }


def fit(name: str, guide: str, seed: int, data: dict, a: argparse.Namespace):
    """One ``bayesdl.fit`` of LeNet-5 with ``guide`` (resumed from ``OUT/runs/NAME``)."""
    import bayesdl
    import bayesdl.bnn as bnn

    # dropout on the first convolution would drop its one input channel: the whole image
    kw = {"dropout": a.dropout, "exclude": "1"} if guide == "mc-dropout" else {}
    bnet = bnn.bayesian(
        lenet5(seed), likelihood="categorical", guide=guide, prior_scale=a.prior_scale, **kw
    )
    n = len(data["y"])
    epoch = -(-n // BATCH)
    out = Path(a.out) / "runs" / name
    resume = (out / "checkpoint.pt").exists()
    t0, c0 = time.perf_counter(), time.process_time()
    post = bayesdl.fit(
        bnet, data=data, steps=a.epochs * epoch, batch_size=BATCH, lr=1e-3,
        lr_schedule="linear", kl_warmup=0 if guide == "map" else epoch, seed=seed,
        compile=not a.eager, progress=False, log_every=epoch, checkpoint_every=epoch,
        out=out, resume=resume, overwrite=not resume,
    )  # fmt: skip
    timing = {
        "wall_s": round(time.perf_counter() - t0, 1),
        "cpu_s": round(time.process_time() - c0, 1),
        "loop_wall_s": post._run.summary.get("wall_seconds"),
        "resumed": resume,
        "compiled": bool(post._run.summary.get("compiled")),
    }
    (out / "data.npz").unlink(missing_ok=True)
    return post, timing


def draws(post, x: torch.Tensor, m: int, chunk: int = 1000) -> torch.Tensor:
    """Class probabilities of ``m`` posterior draws, ``[m, N, 10]``."""
    torch.manual_seed(0)
    parts = []
    for i in range(0, len(x), chunk):
        f = post.predict({"x": x[i : i + chunk]}, num_samples=m)["f"]
        parts.append(f.reshape(m, -1, 10).softmax(-1))
    return torch.cat(parts, 1)


def scores(p: torch.Tensor, y: torch.Tensor, p_ood: dict[str, torch.Tensor]) -> dict:
    """Test scores of the predictive ``p [M, N, K]`` and the OOD AUROCs."""
    from bayesdl.workflows import metrics

    out = {
        "accuracy": metrics.accuracy(p, y),
        "nll": metrics.nll(p, y),
        "ece": metrics.ece(p, y, bins=15),
        "brier": metrics.brier(p, y),
    }
    h_in, mi_in = metrics.entropy(p), metrics.mutual_information(p)
    for k, q in p_ood.items():
        out[f"auroc_entropy_{k}"] = metrics.auroc(h_in, metrics.entropy(q))
        if p.shape[0] > 1:
            out[f"auroc_mi_{k}"] = metrics.auroc(mi_in, metrics.mutual_information(q))
    return out


def members(a: argparse.Namespace, method: str) -> list[tuple[str, str, int]]:
    """The fits a row needs: (run name, guide, seed)."""
    if method == "ensemble":
        return [(f"map-seed{s}", "map", s) for s in range(a.members)]
    if method == "map":
        return [("map-seed0", "map", 0)]
    return [(method, method, 0)]


def row(a: argparse.Namespace, method: str, split) -> dict:
    """Fit the row's networks, then score their predictive on test and shifted inputs."""
    data = {"x": split.x_train, "y": split.y_train}
    ood = shifted(split.x_test)
    probs, ood_probs, fits = [], {k: [] for k in ood}, []
    for name, guide, seed in members(a, method):
        post, timing = fit(name, guide, seed, data, a)
        m = 1 if guide == "map" else a.samples
        probs.append(draws(post, split.x_test, m))
        for k, v in ood.items():
            ood_probs[k].append(draws(post, v, m))
        fits.append({"run": name, **timing})
    p = torch.cat(probs)  # an ensemble's members are its draws
    q = {k: torch.cat(v) for k, v in ood_probs.items()}
    return {
        "method": method,
        "epochs": a.epochs,
        "batch_size": BATCH,
        "prior_scale": a.prior_scale,
        "dropout": a.dropout if method == "mc-dropout" else None,
        "samples": p.shape[0],
        "threads": torch.get_num_threads(),
        **scores(p, split.y_test, q),
        "fits": fits,
        "cpu_s": round(sum(f["cpu_s"] for f in fits), 1),
        "loop_wall_s": round(sum(f["loop_wall_s"] or 0 for f in fits), 1),
    }


def synthetic_split(n: int = 512):
    """Random 'images' whose label is the brightest of ten pixel blocks (smoke tests)."""
    from bayesdl.datasets.bundled import Split

    g = torch.Generator().manual_seed(0)
    x = torch.rand(n + 256, 784, generator=g)
    y = x[:, :780].reshape(-1, 10, 78).mean(-1).argmax(-1)
    return Split(x[:n], y[:n], x[n:], y[n:], image_shape=(28, 28), num_classes=10)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", help="MNIST's four IDX files (or $BAYESDL_MNIST_DIR)")
    p.add_argument("--synthetic", action="store_true", help="made-up 28x28 data (smoke test)")
    p.add_argument("--methods", default=",".join(METHODS))
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--members", type=int, default=5, help="ensemble size")
    p.add_argument("--samples", type=int, default=50, help="predictive draws")
    p.add_argument("--prior-scale", type=float, default=1.0)
    p.add_argument("--dropout", type=float, default=0.05)
    p.add_argument("--eager", action="store_true", help="without compile=True")
    p.add_argument("--out", required=True)
    a = p.parse_args(argv)
    warnings.filterwarnings("ignore")
    torch.set_num_threads(1)
    if a.synthetic:
        split = synthetic_split()
    else:
        from bayesdl.datasets.bundled import mnist

        split = mnist(a.data_dir)
    for method in a.methods.split(","):
        path = Path(a.out) / f"{method}.json"
        if path.exists():
            continue
        r = row(a, method, split)
        path.write_text(json.dumps(r, indent=1) + "\n")
        print(json.dumps({k: v for k, v in r.items() if k != "fits"}), flush=True)
    if a.synthetic:
        shutil.rmtree(Path(a.out) / "runs", ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
