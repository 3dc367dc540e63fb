"""Time of ``post.predict(num_samples=1000)`` and ``post.sample(1000)``: the per-draw check's cost.

    OMP_NUM_THREADS=1 python benchmarks/predict_draws.py [--repeats 20]

Three user models fitted by SVI (auto-normal, 200 steps, 200 rows): a linear regression that
broadcasts over a plate of draws (one vectorised pass after the check), the same with a
``pyro.deterministic("theta_bar", theta.mean())`` (vectorised pass, then that site per draw by
``torch.func.vmap``), and one whose likelihood's location is ``theta.mean()`` (one run per draw,
Pyro's sequential ``Predictive``). Prints the median seconds of each call.
"""

from __future__ import annotations

import argparse
import statistics
import time

import pyro
import pyro.distributions as dist
import torch

import bayesdl

N, D = 200, 5


def linreg(x, y=None):
    theta = pyro.sample("theta", dist.Normal(torch.zeros(D), 1.0).to_event(1))
    sigma = pyro.sample("sigma", dist.HalfNormal(1.0))
    with pyro.plate("data", x.shape[0]):
        pyro.sample("y", dist.Normal((x * theta).sum(-1), sigma), obs=y)


def linreg_mean(x, y=None):
    theta = pyro.sample("theta", dist.Normal(torch.zeros(D), 1.0).to_event(1))
    pyro.deterministic("theta_bar", theta.mean())
    sigma = pyro.sample("sigma", dist.HalfNormal(1.0))
    with pyro.plate("data", x.shape[0]):
        pyro.sample("y", dist.Normal((x * theta).sum(-1), sigma), obs=y)


def mean_only(x, y=None):
    theta = pyro.sample("theta", dist.Normal(torch.zeros(D), 1.0).to_event(1))
    with pyro.plate("data", x.shape[0]):
        pyro.sample("y", dist.Normal(theta.mean() + 0 * x[:, 0], 1.0), obs=y)


def median_seconds(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=20)
    args = p.parse_args()
    torch.manual_seed(0)
    x = torch.randn(N, D)
    y = x @ torch.linspace(-1, 1, D) + 0.3 * torch.randn(N)
    print(f"{'model':<12} {'predict(1000) s':>16} {'sample(1000) s':>15}")
    for model, repeats in ((linreg, args.repeats), (linreg_mean, args.repeats), (mean_only, 3)):
        pyro.set_rng_seed(0)
        post = bayesdl.fit(model, {"x": x, "y": y}, steps=200, progress=False)
        pred = median_seconds(lambda post=post: post.predict(num_samples=1000), repeats)
        samp = median_seconds(lambda post=post: post.sample(1000), repeats)
        print(f"{model.__name__:<12} {pred:>16.4f} {samp:>15.4f}")


if __name__ == "__main__":
    import warnings

    warnings.simplefilter("ignore")
    main()
