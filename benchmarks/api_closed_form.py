"""The Python API against closed forms: a user-written linear regression with correlated inputs
(``auto-mvn``) and the coin by name.

    OMP_NUM_THREADS=1 python benchmarks/api_closed_form.py

The regression is ``tests/api/test_fit.py::regression`` with that test's data and settings
(40 points, two correlated inputs, known noise 0.5, prior sd 1; 1500 steps, lr 0.05). Prints
the fitted posterior's mean error and sd ratio per weight in units of the exact posterior sd,
the predictive mean and sd at two new inputs beside the exact ones, and the coin's fitted
Beta mean beside 7/12.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "tests"), str(ROOT / "tests" / "api")]

import test_fit as T  # noqa: E402

import bayesdl  # noqa: E402
from bayesdl.models import linear_regression as exact  # noqa: E402


def main() -> None:
    x, y = T._data()
    t = time.perf_counter()
    post = bayesdl.fit(
        T.regression, data={"x": x, "y": y}, guide="auto-mvn", steps=1500, lr=0.05, progress=False
    )
    seconds = time.perf_counter() - t
    mu, cov = exact.posterior(x, y, prior_loc=0.0, prior_scale=T.S0, noise_scale=T.SIGMA)
    sd = cov.diagonal().sqrt().double()
    s = post.summary(num_samples=4000)["theta"]
    print(f"fit: {seconds:.1f} s, converged {post.converged}")
    print("mean error / exact sd:", ((torch.tensor(s["mean"]) - mu.double()) / sd).tolist())
    print("sd / exact sd:", (torch.tensor(s["std"]) / sd).tolist())
    x_new = torch.tensor([[1.0, 0.5], [-2.0, 1.0]])
    draws = post.predict({"x": x_new}, num_samples=20000)["y"].double()
    pred = exact.predictive(x_new, mu.double(), cov.double(), T.SIGMA)
    print("predictive mean:", draws.mean(0).tolist(), "exact", pred.mean.tolist())
    print("predictive sd:", draws.std(0).tolist(), "exact", pred.stddev.tolist())
    coin = bayesdl.fit("coin", heads=6, tails=4, progress=False)
    print("coin fitted Beta mean:", coin._run.summary["fitted"]["mean"], "exact", 7 / 12)


if __name__ == "__main__":
    main()
