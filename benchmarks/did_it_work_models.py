"""The models of ``benchmarks/did_it_work.py``: Pyro's examples and tutorials, as written there.

Each entry of :data:`CASES` is ``name -> (source, model, data(), fit options)``: the model
function (or PyroModule) is Pyro's, data are simulated at the shape of the original where it
is not bundled (seeded), and the fit options are what a user passes (none: the defaults).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyro
import pyro.distributions as dist
import torch
from pyro.nn import PyroModule, PyroSample
from torch import nn

from bayesdl.workflows.user_model import load_module

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def _tensors(d: dict) -> dict[str, torch.Tensor]:
    return {
        k: torch.as_tensor(v, dtype=torch.float32 if np.asarray(v).dtype.kind == "f" else None)
        for k, v in d.items()
    }


# ----------------------------------------------------------------------------- Pyro's models


def schools_centred(y, sigma):
    """Eight schools, centred (Pyro's examples/eight_schools, NumPyro's getting started)."""
    mu = pyro.sample("mu", dist.Normal(0.0, 5.0))
    tau = pyro.sample("tau", dist.HalfCauchy(5.0))
    with pyro.plate("schools", len(y)):
        theta = pyro.sample("theta", dist.Normal(mu, tau))
        pyro.sample("obs", dist.Normal(theta, sigma), obs=y)


SCHOOLS = {
    "y": [28.0, 8.0, -3.0, 7.0, -1.0, 1.0, 18.0, 12.0],
    "sigma": [15.0, 10.0, 16.0, 11.0, 9.0, 11.0, 10.0, 18.0],
}


def gamma_poisson_regression(features, counts):
    """Pyro's tutorial 'Predictive and Deterministic' (GammaPoisson = negative binomial),
    with the likelihood subsampled: ``pyro.plate("bins", N, subsample_size=20)``."""
    n, p = features.shape
    scale = pyro.sample("scale", dist.LogNormal(0.0, 1.0))
    coef = pyro.sample("coef", dist.Normal(0.0, scale).expand([p]).to_event(1))
    concentration = pyro.sample("concentration", dist.LogNormal(0.0, 1.0))
    with pyro.plate("bins", n, subsample_size=20) as idx:
        rate = torch.nn.functional.softplus(features[idx] @ coef)
        pyro.sample("counts", dist.GammaPoisson(concentration, rate), obs=counts[idx])


def gamma_poisson_data() -> dict:
    """The tutorial's data: make_regression(n_features=1, bias=150, noise=5,
    random_state=108), y^3 / 1e5 + 10 rounded; an intercept column beside x."""
    from sklearn.datasets import make_regression

    x, y = make_regression(n_features=1, bias=150.0, noise=5.0, random_state=108)
    counts = np.clip(np.round(y**3 / 100000.0 + 10.0), 0, None)
    features = np.column_stack([np.ones(len(x)), x[:, 0]])
    return {"features": features, "counts": counts}


def baseball(at_bats, hits):
    """Pyro's examples/baseball.py, partially pooled with a logit link."""
    loc = pyro.sample("loc", dist.Normal(-1.0, 1.0))
    scale = pyro.sample("scale", dist.HalfCauchy(1.0))
    with pyro.plate("num_players", at_bats.shape[0]):
        alpha = pyro.sample("alpha", dist.Normal(loc, scale))
        pyro.sample("obs", dist.Binomial(at_bats, logits=alpha), obs=hits)


def baseball_data() -> dict:
    """18 players with 45 at-bats each (Efron and Morris 1975's shape), simulated."""
    rng = np.random.default_rng(0)
    p = 1 / (1 + np.exp(-rng.normal(-1.0, 0.2, 18)))
    return {"at_bats": np.full(18, 45.0), "hits": rng.binomial(45, p).astype(float)}


class BayesianRegression(PyroModule):
    """Pyro's Bayesian regression tutorial's PyroModule, here on correlated inputs."""

    def __init__(self, in_features: int = 3, out_features: int = 1):
        super().__init__()
        self.linear = PyroModule[nn.Linear](in_features, out_features)
        self.linear.weight = PyroSample(
            dist.Normal(0.0, 1.0).expand([out_features, in_features]).to_event(2)
        )
        self.linear.bias = PyroSample(dist.Normal(0.0, 10.0).expand([out_features]).to_event(1))

    def forward(self, x, y=None):
        sigma = pyro.sample("sigma", dist.Uniform(0.0, 10.0))
        mean = self.linear(x).squeeze(-1)
        with pyro.plate("data", x.shape[0]):
            pyro.sample("obs", dist.Normal(mean, sigma), obs=y)
        return mean


def correlated_data() -> dict:
    """100 rows, three inputs with correlation 0.95."""
    rng = np.random.default_rng(0)
    z = rng.normal(size=(100, 1))
    x = 0.95 * z + np.sqrt(1 - 0.95**2) * rng.normal(size=(100, 3))
    y = x @ np.array([1.0, -0.5, 0.3]) + 0.5 + 0.5 * rng.normal(size=100)
    return {"x": x, "y": y}


def half_cauchy_scale(y):
    """A scale from a handful of points: ``s ~ HalfCauchy(1)``, ``y_i ~ N(0, s^2)``."""
    s = pyro.sample("s", dist.HalfCauchy(1.0))
    with pyro.plate("data", len(y)):
        pyro.sample("y", dist.Normal(0.0, s), obs=y)


def logistic_regression(x, y):
    """Logistic regression, 300 rows, three inputs."""
    w = pyro.sample("w", dist.Normal(0.0, 1.0).expand([x.shape[1]]).to_event(1))
    b = pyro.sample("b", dist.Normal(0.0, 5.0))
    with pyro.plate("data", len(x)) as idx:
        pyro.sample("y", dist.Bernoulli(logits=b + x[idx] @ w), obs=y[idx])


def logistic_data() -> dict:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 3))
    p = 1 / (1 + np.exp(-(0.5 + x @ np.array([1.0, -2.0, 0.5]))))
    return {"x": x, "y": (rng.random(300) < p).astype(float)}


def gamma_poisson(counts):
    """The conjugate Gamma-Poisson: posterior Gamma(2 + sum, 1 + N)."""
    rate = pyro.sample("rate", dist.Gamma(2.0, 1.0))
    with pyro.plate("data", len(counts)):
        pyro.sample("c", dist.Poisson(rate), obs=counts)


def stochastic_volatility(returns):
    """A small stochastic-volatility model (the shape of NumPyro's example): a Gaussian
    random walk of log volatility, 50 returns."""
    sigma = pyro.sample("sigma", dist.Exponential(10.0))
    nu = pyro.sample("nu", dist.Gamma(2.0, 0.1))
    # a Gaussian random walk (NumPyro's GaussianRandomWalk; Pyro has none): its steps
    steps = pyro.sample("h_steps", dist.Normal(0.0, 1.0).expand([len(returns)]).to_event(1))
    h = (sigma * steps).cumsum(-1)
    with pyro.plate("data", len(returns)):
        pyro.sample("r", dist.StudentT(nu, 0.0, h.exp()), obs=returns)


def volatility_data() -> dict:
    rng = np.random.default_rng(0)
    h = np.cumsum(0.1 * rng.normal(size=50)) - 1.0
    return {"returns": np.exp(h) * rng.standard_t(8.0, 50)}


def _csv(name: str) -> dict:
    table = np.genfromtxt(EXAMPLES / "data" / name, delimiter=",", names=True)
    return {k: np.asarray(table[k], dtype=float) for k in table.dtype.names}


def _example(file: str):
    return load_module(EXAMPLES / file).model


def _hierarchy_data() -> dict:
    return dict(np.load(EXAMPLES / "data" / "hierarchy.npz"))


def _poisson_data() -> dict:
    d = _csv("poisson_regression.csv")
    return {"x": np.column_stack([d["x1"], d["x2"]]), "y": d["y"]}


def cases() -> dict[str, tuple[str, object, dict, dict]]:
    """``name -> (source, model, data, fit options)``."""
    rugged = load_module(EXAMPLES / "rugged_terrain.py")
    hier = _example("hierarchical_normal.py")
    y4 = {"y": [0.3, -1.2, 0.8, 2.0]}
    counts = {"counts": np.random.default_rng(0).poisson(3.0, 20).astype(float)}
    return {
        "eight schools (non-centred)": (
            "Pyro examples/eight_schools.py",
            _example("eight_schools.py"),
            SCHOOLS,
            {},
        ),
        "eight schools (centred)": ("Pyro examples/eight_schools.py", schools_centred, SCHOOLS, {}),
        "rugged terrain, auto-mvn lr 0.05": (
            "Pyro tutorial Bayesian regression",
            rugged.model,
            rugged.simulate(),
            {"guide": "auto-mvn", "lr": 0.05},
        ),
        "rugged terrain": (
            "Pyro tutorial Bayesian regression",
            rugged.model,
            rugged.simulate(),
            {},
        ),
        "negative binomial, subsample_size 20, auto-mvn": (
            "Pyro tutorial Predictive and Deterministic",
            gamma_poisson_regression,
            gamma_poisson_data(),
            {"guide": "auto-mvn"},
        ),
        "Poisson regression": (
            "examples/poisson_regression.py",
            _example("poisson_regression.py"),
            _poisson_data(),
            {},
        ),
        "hierarchy 40 groups in 5 regions": (
            "examples/hierarchical_normal.py",
            hier,
            _hierarchy_data(),
            {},
        ),
        "hierarchy, auto-mvn": (
            "examples/hierarchical_normal.py",
            hier,
            _hierarchy_data(),
            {"guide": "auto-mvn"},
        ),
        "HalfCauchy scale from 4 points": ("(issue 21)", half_cauchy_scale, y4, {}),
        "PyroModule regression, correlated inputs": (
            "Pyro tutorial Bayesian regression",
            BayesianRegression(),
            correlated_data(),
            {},
        ),
        "logistic regression, 300 rows": ("(issue 21)", logistic_regression, logistic_data(), {}),
        "Gamma-Poisson": ("(issue 21)", gamma_poisson, counts, {}),
        "baseball, partially pooled logit": (
            "Pyro examples/baseball.py",
            baseball,
            baseball_data(),
            {},
        ),
        "stochastic volatility": (
            "NumPyro examples/stochastic_volatility.py",
            stochastic_volatility,
            volatility_data(),
            {},
        ),
    }


def data_of(raw: dict) -> dict[str, torch.Tensor]:
    """The fit's keyword arguments: float arrays as float32, integer arrays as int64."""
    return _tensors(raw)
