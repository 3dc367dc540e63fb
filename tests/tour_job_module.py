"""A tour job for tests/test_tour_jobs.py: one coin fit and a draw from the global RNG."""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

import pyro
import pyro.distributions as dist
import torch


def coin(flips):
    p = pyro.sample("p", dist.Beta(2.0, 2.0))
    with pyro.plate("flips", len(flips)):
        pyro.sample("x", dist.Bernoulli(p), obs=flips)


def sections(out: Path, overwrite: bool = False, progress: bool = True, *, tag: str) -> list[str]:
    """Fit the coin (no seed given: the job's own seed is what holds it fixed); the posterior
    mean and a global torch draw as the section's text; the process id in ``out/TAG.json``."""
    import bayesdl

    with warnings.catch_warnings():  # 50 steps: not converged, and not what is tested
        warnings.simplefilter("ignore")
        post = bayesdl.fit(coin, data={"flips": torch.tensor([1.0, 1.0, 0.0, 1.0])}, steps=50)
    draw = torch.rand(()).item()
    facts = {"pid": os.getpid(), "threads": torch.get_num_threads()}
    Path(out, f"{tag}.json").write_text(json.dumps(facts))
    return [f"{tag} {post.summary()['p']['mean']:.6f} {draw:.6f}"]
