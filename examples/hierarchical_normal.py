"""A three-level hierarchical normal model: observations in 40 groups in 5 regions, non-centred.

    bayesdl fit examples/hierarchical_normal.py:model --data examples/data/hierarchy.npz \
        --guide auto-mvn --out runs/hierarchy
    bayesdl fit examples/hierarchical_normal.py:model --data examples/data/hierarchy.npz \
        --inference nuts --out runs/hierarchy-nuts

Written as a Pyro user writes it (49 latents: ``mu``, three scales, 5 region and 40 group
offsets); ``simulate`` draws 200 observations (5 per group) from it at :data:`TRUTH`, and
``python examples/hierarchical_normal.py`` writes them to ``examples/data/hierarchy.npz``.
"""

from pathlib import Path

import numpy as np
import pyro
import pyro.distributions as dist

#: the values the data are drawn at
TRUTH = {"mu": 3.0, "tau_region": 1.0, "tau_group": 0.5, "sigma": 1.0}
REGIONS, GROUPS = 5, 40


def model(region, group, y=None):
    """``mu ~ N(0, 10^2)``; ``tau_region, tau_group, sigma ~ HalfNormal(2)``;
    ``r_k = mu + tau_region eta_k`` (5 regions), ``g_j = r_region(j) + tau_group e_j``
    (40 groups), ``eta, e ~ N(0, 1)``; ``y_n ~ N(g_group(n), sigma^2)``."""
    mu = pyro.sample("mu", dist.Normal(0.0, 10.0))
    tau_region = pyro.sample("tau_region", dist.HalfNormal(2.0))
    tau_group = pyro.sample("tau_group", dist.HalfNormal(2.0))
    sigma = pyro.sample("sigma", dist.HalfNormal(2.0))
    with pyro.plate("regions", REGIONS):
        eta = pyro.sample("eta", dist.Normal(0.0, 1.0))
    with pyro.plate("groups", GROUPS):
        e = pyro.sample("e", dist.Normal(0.0, 1.0))
    region_mean = mu + tau_region * eta
    group_mean = region_mean[region] + tau_group * e
    with pyro.plate("data", len(group)) as idx:
        pyro.sample(
            "y", dist.Normal(group_mean[group[idx]], sigma), obs=None if y is None else y[idx]
        )


def simulate(per_group: int = 5, seed: int = 0) -> dict[str, np.ndarray]:
    """``region`` of each of the 40 groups (8 per region), ``group`` of each observation, and
    ``y`` drawn from the model at :data:`TRUTH`."""
    rng = np.random.default_rng(seed)
    t = TRUTH
    region = np.repeat(np.arange(REGIONS), GROUPS // REGIONS)
    group = np.repeat(np.arange(GROUPS), per_group)
    region_mean = t["mu"] + t["tau_region"] * rng.standard_normal(REGIONS)
    group_mean = region_mean[region] + t["tau_group"] * rng.standard_normal(GROUPS)
    y = group_mean[group] + t["sigma"] * rng.standard_normal(len(group))
    return {"region": region, "group": group, "y": y}


if __name__ == "__main__":
    path = Path(__file__).resolve().parent / "data" / "hierarchy.npz"
    np.savez(path, **simulate())
    print(f"200 observations -> {path}")
