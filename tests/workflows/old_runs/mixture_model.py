"""The model of the fixture run ``mixture/`` (made by bayesdl before issue 20's options change)."""

import pyro
import pyro.distributions as dist
import torch
from pyro.infer import config_enumerate


@config_enumerate
def mixture(y):
    """Two-component Gaussian mixture, the assignment summed out."""
    w = pyro.sample("w", dist.Beta(2.0, 2.0))
    loc = pyro.sample("loc", dist.Normal(torch.zeros(2), 3.0).to_event(1))
    with pyro.plate("data", len(y)):
        z = pyro.sample("z", dist.Bernoulli(w))
        pyro.sample("y", dist.Normal(loc[z.long()], 1.0), obs=y)
