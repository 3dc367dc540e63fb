"""Time per epoch of `fit vae` (the shared engine) against a hand-written PyTorch VAE loop.

Same networks (the classes of models/vae.py and guides/vae.py, same initialisation), same
single-sample ELBO estimator (log p(x|z) + log p(z) - log q(z|x) at one reparameterized z,
scaled by N / B as Pyro's plate does), same Adam, batch 128, dynamically binarized MNIST
(a fresh binary draw of the training set each epoch), both in one process, epochs
interleaved so that load from other processes hits both alike.

    python benchmarks/vae_throughput.py --data-dir DIR [--epochs 5] [--threads 1]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.distributions import Normal

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bayesdl.datasets import bundled as datasets  # noqa: E402
from bayesdl.guides.vae import AmortizedGuide, Encoder  # noqa: E402
from bayesdl.inference.train import FitConfig, fit  # noqa: E402
from bayesdl.models.vae import Decoder, VAEModel  # noqa: E402
from bayesdl.workflows.vae import dynamic_binarization  # noqa: E402

HIDDEN, LATENT, BATCH, LR = (200, 200), 50, 128, 1e-3


def networks(seed: int) -> tuple[Encoder, Decoder]:
    """The 784-200-200-50 encoder and 50-200-200-784 decoder, initialised from ``seed``."""
    torch.manual_seed(seed)
    return Encoder(784, HIDDEN, LATENT), Decoder(LATENT, HIDDEN[::-1], 784, "bernoulli")


def plain_epoch(x: torch.Tensor, seed: int) -> tuple[float, float]:
    """One epoch of a hand-written loop; returns (wall, CPU) seconds."""
    enc, dec = networks(seed)
    opt = torch.optim.Adam([*enc.parameters(), *dec.parameters()], lr=LR)
    n = len(x)
    t0, c0 = time.perf_counter(), time.process_time()
    xb_all = torch.bernoulli(x)
    perm = torch.randperm(n)
    running = torch.zeros(())
    for i in range(n // BATCH):
        xb = xb_all.index_select(0, perm[i * BATCH : (i + 1) * BATCH])
        loc, scale = enc(xb)
        z = loc + scale * torch.randn_like(loc)
        log_q = Normal(loc, scale).log_prob(z).sum(-1)
        log_pz = Normal(0.0, 1.0).log_prob(z).sum(-1)
        log_px = -F.binary_cross_entropy_with_logits(dec(z), xb, reduction="none").sum(-1)
        loss = -(log_px + log_pz - log_q).sum() * (n / BATCH)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        running += loss.detach()
    float(running)
    return time.perf_counter() - t0, time.process_time() - c0


def engine_epoch(x: torch.Tensor, seed: int) -> tuple[float, float]:
    """One epoch of ``inference.train.fit`` on the VAE model and guide; (wall, CPU) seconds."""
    enc, dec = networks(seed)
    steps = len(x) // BATCH
    config = FitConfig(steps=steps, lr=LR, batch_size=BATCH, log_every=steps, seed=seed)
    t0, c0 = time.perf_counter(), time.process_time()
    fit(
        VAEModel(dec, LATENT),
        AmortizedGuide(enc),
        {"x": x},
        config,
        None,
        data_size=len(x),
        progress=False,
        data_hook=dynamic_binarization,
    )
    return time.perf_counter() - t0, time.process_time() - c0


def main() -> None:
    """Interleave epochs of both loops and print per-epoch times and their ratio."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", required=True)
    p.add_argument("--epochs", type=int, default=5, help="epochs of each loop (default 5)")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    x = datasets.mnist(args.data_dir).x_train
    plain, engine = [], []
    for e in range(args.epochs):
        plain.append(plain_epoch(x, e))
        engine.append(engine_epoch(x, e))
        print(
            f"epoch {e}: wall plain {plain[-1][0]:.2f} s, fit {engine[-1][0]:.2f} s "
            f"(ratio {engine[-1][0] / plain[-1][0]:.3f}); CPU plain {plain[-1][1]:.2f} s, "
            f"fit {engine[-1][1]:.2f} s (ratio {engine[-1][1] / plain[-1][1]:.3f})",
            flush=True,
        )
    for i, what in ((0, "wall"), (1, "CPU")):
        mp = statistics.median(t[i] for t in plain)
        me = statistics.median(t[i] for t in engine)
        ratios = [b[i] / a[i] for a, b in zip(plain, engine, strict=True)]
        print(
            f"{what}: median per epoch plain {mp:.2f} s, fit {me:.2f} s, ratio of medians "
            f"{me / mp:.3f}; per-pair ratios min {min(ratios):.3f} "
            f"median {statistics.median(ratios):.3f} max {max(ratios):.3f}"
        )
    machine = platform.processor() or platform.machine()
    print(
        f"torch {torch.__version__}, threads {torch.get_num_threads()}, {machine}, "
        f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}"
    )


if __name__ == "__main__":
    main()
