"""Terrain ruggedness and GDP: the regression of Pyro's Bayesian regression tutorial.

    bayesdl fit examples/rugged_terrain.py:model --data examples/data/rugged.csv --out runs/rugged
    bayesdl fit examples/rugged_terrain.py:model --data examples/data/rugged.csv \
        --inference nuts --out runs/rugged-nuts
    bayesdl compare runs/rugged runs/rugged-nuts

The tutorial's data (Nunn and Puga 2012) are not bundled: ``simulate`` draws 170 nations of
the same shape and scale (49 African, ruggedness 0 to about 6, log GDP per head about 6 to 11)
from the model at the tutorial's posterior means, and ``python examples/rugged_terrain.py``
writes them to ``examples/data/rugged.csv``.
"""

from pathlib import Path

import numpy as np
import pyro
import pyro.distributions as dist

#: the posterior means of Pyro's tutorial (its NUTS run on the real data)
TRUTH = {"a": 9.2, "b_a": -1.9, "b_r": -0.2, "b_ar": 0.35, "sigma": 0.95}


def model(cont_africa, rugged, log_gdp=None):
    """``log_gdp ~ N(a + b_a cont + b_r rugg + b_ar cont rugg, sigma^2)``, ``a ~ N(0, 10^2)``,
    ``b_* ~ N(0, 1)``, ``sigma ~ Uniform(0, 10)``."""
    a = pyro.sample("a", dist.Normal(0.0, 10.0))
    b_a = pyro.sample("b_a", dist.Normal(0.0, 1.0))
    b_r = pyro.sample("b_r", dist.Normal(0.0, 1.0))
    b_ar = pyro.sample("b_ar", dist.Normal(0.0, 1.0))
    sigma = pyro.sample("sigma", dist.Uniform(0.0, 10.0))
    mean = a + b_a * cont_africa + b_r * rugged + b_ar * cont_africa * rugged
    with pyro.plate("data", len(rugged)) as idx:
        pyro.sample(
            "log_gdp", dist.Normal(mean[idx], sigma), obs=None if log_gdp is None else log_gdp[idx]
        )


def simulate(n: int = 170, n_africa: int = 49, seed: int = 0) -> dict[str, np.ndarray]:
    """``n`` nations like the tutorial's: ruggedness skewed (Gamma, at most 6.2), log GDP from
    the model at :data:`TRUTH`."""
    rng = np.random.default_rng(seed)
    cont = np.zeros(n)
    cont[rng.choice(n, n_africa, replace=False)] = 1.0
    rugged = np.minimum(rng.gamma(1.3, 1.0, n), 6.2)
    t = TRUTH
    mean = t["a"] + t["b_a"] * cont + t["b_r"] * rugged + t["b_ar"] * cont * rugged
    log_gdp = mean + t["sigma"] * rng.standard_normal(n)
    return {"cont_africa": cont, "rugged": rugged, "log_gdp": log_gdp}


if __name__ == "__main__":
    data = simulate()
    path = Path(__file__).resolve().parent / "data" / "rugged.csv"
    table = np.column_stack(list(data.values()))
    np.savetxt(path, table, delimiter=",", header=",".join(data), comments="", fmt="%.4f")
    print(f"{len(table)} rows -> {path}")
