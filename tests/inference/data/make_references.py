"""The NUTS references of tests/inference/test_did_it_work.py, by Pyro's own sampler.

    OMP_NUM_THREADS=1 python tests/inference/data/make_references.py

Writes ``references.json`` beside this file: per model, the posterior mean and sd of every
latent site from ``pyro.infer.MCMC(NUTS(model))`` (2 chains x 2000 draws after 1000 warm-up,
seed 0), with the split R-hat, so the tests need no sampler.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pyro
import torch
from pyro.infer import MCMC, NUTS
from pyro.infer.mcmc.util import diagnostics

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from test_did_it_work import logistic_data, logistic_regression  # noqa: E402


def reference(model, data: dict) -> dict:
    chains = []
    for c in range(2):
        pyro.set_rng_seed(c)
        mcmc = MCMC(NUTS(model), num_samples=2000, warmup_steps=1000, disable_progbar=True)
        mcmc.run(**data)
        chains.append(mcmc.get_samples())
    draws = {k: torch.stack([c[k] for c in chains]) for k in chains[0]}
    diag = diagnostics(draws)
    return {
        k: {
            "mean": v.reshape(-1, *v.shape[2:]).mean(0).tolist(),
            "std": v.reshape(-1, *v.shape[2:]).std(0).tolist(),
            "r_hat": torch.as_tensor(diag[k]["r_hat"]).max().item(),
        }
        for k, v in draws.items()
    }


def main() -> None:
    refs = {"logistic_regression": reference(logistic_regression, logistic_data())}
    (HERE / "references.json").write_text(json.dumps(refs, indent=1) + "\n")
    print(json.dumps(refs, indent=1))


if __name__ == "__main__":
    main()
