"""Poisson regression: counts whose log rate is linear in the inputs.

    bayesdl fit examples/poisson_regression.py:model --data examples/data/poisson_regression.csv \
        --x-cols x1,x2 --y-col y --guide auto-mvn --batch-size 50 --out runs/poisson
    bayesdl predict runs/poisson --input new_inputs.csv
"""

import pyro
import pyro.distributions as dist


def model(x, y=None):
    """``w ~ N(0, I)``, ``b ~ N(0, 5^2)``, ``y_n ~ Poisson(exp(b + x_n . w))``."""
    w = pyro.sample("w", dist.Normal(0.0, 1.0).expand([x.shape[1]]).to_event(1))
    b = pyro.sample("b", dist.Normal(0.0, 5.0))
    with pyro.plate("data", x.shape[0]) as idx:
        rate = (b + x[idx] @ w).exp()
        pyro.sample("y", dist.Poisson(rate), obs=None if y is None else y[idx])
