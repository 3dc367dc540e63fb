"""Eight schools (Rubin 1981; Gelman et al., BDA, section 5.5), non-centred, also a plugin.

    bayesdl fit examples/eight_schools.py:model --data examples/data/eight_schools.csv \
        --guide auto-mvn --out runs/schools
    bayesdl fit eight-schools --plugin examples/eight_schools.py --out runs/schools
    bayesdl evaluate runs/schools --plugin examples/eight_schools.py   (exact E[mu | y], E[tau | y])
"""

from pathlib import Path

import numpy as np
import pyro
import pyro.distributions as dist

from bayesdl.workflows.registry import register
from bayesdl.workflows.user_model import UserModel


def model(y, sigma):
    """``mu ~ N(0, 5^2)``, ``tau ~ HalfCauchy(5)``, ``theta_j = mu + tau eta_j``,
    ``eta_j ~ N(0, 1)``, ``y_j ~ N(theta_j, sigma_j^2)``."""
    mu = pyro.sample("mu", dist.Normal(0.0, 5.0))
    tau = pyro.sample("tau", dist.HalfCauchy(5.0))
    with pyro.plate("schools", len(y)):
        eta = pyro.sample("eta", dist.Normal(0.0, 1.0))
        pyro.sample("obs", dist.Normal(mu + tau * eta, sigma), obs=y)


def exact_posterior_means(y, sigma, mu_scale=5.0, tau_scale=5.0) -> dict[str, float]:
    """``E[mu | y]`` and ``E[tau | y]`` by quadrature over tau: given tau, ``mu`` is conjugate
    (``y_j ~ N(mu, sigma_j^2 + tau^2)``), so ``p(tau | y)`` is known up to a constant (BDA 5.4)."""
    y, sigma = np.asarray(y, float), np.asarray(sigma, float)
    u = np.linspace(1e-6, 1 - 1e-6, 200001)  # tau = tau_scale * tan(pi u / 2): HalfCauchy uniform
    tau = tau_scale * np.tan(np.pi * u / 2)
    v = sigma[None, :] ** 2 + tau[:, None] ** 2
    prec = 1 / mu_scale**2 + (1 / v).sum(1)
    mu_hat = (y[None, :] / v).sum(1) / prec
    # log p(y | tau) with mu integrated out, up to a constant
    log_like = (
        -0.5 * np.log(v).sum(1)
        - 0.5 * np.log(prec * mu_scale**2)
        - 0.5 * ((y[None, :] ** 2 / v).sum(1) - prec * mu_hat**2)
    )
    w = np.exp(log_like - log_like.max())
    w /= w.sum()
    return {"mu": float((w * mu_hat).sum()), "tau": float((w * tau).sum())}


@register
class EightSchools(UserModel):
    """The eight-schools model with its data and an exact reference for the evaluation."""

    name = "eight-schools"
    description = "eight schools, hierarchical normal (a plugin example)"
    model_fn = staticmethod(model)
    default_guide = "auto-mvn"
    default_data = "data/eight_schools.csv"
    fit_defaults = {"steps": 3000, "lr": 0.02, "lr_schedule": "cosine", "particles": 8}

    def evaluate(self, problem, out: Path) -> dict:
        """The fitted posterior means of mu and tau beside the exact ones."""
        result = super().evaluate(problem, out)
        exact = exact_posterior_means(problem.data["y"], problem.data["sigma"])
        post = result["posterior"]
        result["exact"] = exact
        result["fitted"] = {k: post[k]["mean"] for k in ("mu", "tau")}
        return result
