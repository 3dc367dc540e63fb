"""A mixture of K Gaussians in one dimension; each point's component is summed out exactly.

    bayesdl fit examples/gaussian_mixture.py:model --data examples/data/mixture.csv \
        --estimator enum --arg K=2 --init sample --out runs/mixture
"""

import pyro
import pyro.distributions as dist
import torch


def model(x, K: int = 2):
    """``pi ~ Dir(1)``, ``mu_k ~ N(0, 10^2)``, ``s ~ LogNormal(0, 1)``,
    ``z_n ~ Cat(pi)``, ``x_n ~ N(mu_{z_n}, s^2)``; ``z`` is enumerated (--estimator enum)."""
    weights = pyro.sample("weights", dist.Dirichlet(torch.ones(K)))
    with pyro.plate("components", K):
        locs = pyro.sample("locs", dist.Normal(0.0, 10.0))
    scale = pyro.sample("scale", dist.LogNormal(0.0, 1.0))
    with pyro.plate("data", len(x)) as idx:
        z = pyro.sample("z", dist.Categorical(weights))
        pyro.sample("x", dist.Normal(locs[z], scale), obs=x[idx])
