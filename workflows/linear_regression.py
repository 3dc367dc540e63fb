"""Bayesian linear regression checked against its closed-form posterior and predictive."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.distributions import MultivariateNormal, kl_divergence

import bayesdl.guides.linear_regression as lr_guides
import bayesdl.models.linear_regression as linreg
from bayesdl.datasets.bundled import diabetes
from bayesdl.datasets.io import load_arrays
from bayesdl.inference.errors import UserError
from bayesdl.inference.predictive import sample_posterior
from bayesdl.workflows.base import Problem, Workflow
from bayesdl.workflows.registry import register

#: the most numbers --simulate N --dim D makes (80 MB of float64)
MAX_SIMULATED = 10_000_000


def _split(x: np.ndarray, y: np.ndarray, test_fraction: float, seed: int):
    rng = np.random.default_rng(seed)
    perm = rng.permutation(len(x))
    n_test = int(round(test_fraction * len(x)))
    te, tr = perm[:n_test], perm[n_test:]
    if len(tr) < 1:
        raise UserError(
            f"--test-fraction {test_fraction} holds out all {len(x)} points: none left to fit"
        )
    t = lambda a: torch.as_tensor(a, dtype=torch.float32)  # noqa: E731
    return t(x[tr]), t(y[tr]), t(x[te]), t(y[te])


@dataclass(frozen=True)
class LinearRegressionOptions:
    """The data (bundled, a file or a simulation) and the Gaussian prior and noise."""

    data: str = field(
        default="diabetes",
        metadata={
            "help": "`diabetes` (scikit-learn, standardized; default), or a .npz with x, y, "
            "or a .csv (y = --y-col, x = the other columns)"
        },
    )
    y_col: str | None = field(
        default=None, metadata={"help": "the .csv column holding y (default: the last)"}
    )
    simulate: int | None = field(
        default=None, metadata={"help": "simulate N points instead", "metavar": "N"}
    )
    dim: int = field(default=1, metadata={"help": "inputs per simulated point (default 1)"})
    prior_loc: float = field(default=0.0, metadata={"help": "prior mean mu0 (default 0)"})
    prior_scale: float = field(default=1.0, metadata={"help": "prior std s0 (default 1)"})
    noise_scale: float = field(default=1.0, metadata={"help": "known noise std sigma (default 1)"})
    test_fraction: float = field(default=0.25, metadata={"help": "held-out share (default 0.25)"})


@register
class LinearRegression(Workflow):
    """``theta ~ N(mu0, s0^2 I)``, ``y ~ N(theta^T x, sigma^2)``: Gaussian guides vs exact."""

    name = "linreg"
    report = "linear_regression"
    description = "Bayesian linear regression (known noise): Gaussian guides vs exact posterior"
    latent = "continuous"
    default_estimator = "reparam"
    guides = ("full-covariance", "mean-field")
    default_guide = "full-covariance"
    options = LinearRegressionOptions
    fit_defaults = {"steps": 3000, "lr": 0.05, "lr_schedule": "linear", "particles": 32}
    nuts = True  # --inference nuts: checked against the closed form
    tour_runs = [
        ["--guide", "full-covariance"],
        ["--guide", "mean-field"],
        ["--simulate", "10", "--dim", "1", "--noise-scale", "0.3", "--guide", "full-covariance"],
    ]

    def _data(self):
        o = self.model_options
        for flag, v in (("--prior-scale", o.prior_scale), ("--noise-scale", o.noise_scale)):
            # (their squares and inverse squares must be float32 numbers)
            if not 1e-15 <= v <= 1e15:
                raise UserError(f"{flag} must be between 1e-15 and 1e15, got {v}")
        if not abs(o.prior_loc) <= 1e15:
            raise UserError(f"--prior-loc must be a number within +-1e15, got {o.prior_loc}")
        if not 0 <= o.test_fraction < 1:
            raise UserError("--test-fraction must be in [0, 1)")
        if o.simulate is not None:
            if o.simulate < 2 or o.dim < 1:
                raise UserError("--simulate needs N >= 2 points and --dim >= 1")
            if o.simulate * o.dim > MAX_SIMULATED:
                raise UserError(f"--simulate N x --dim: at most {MAX_SIMULATED:,} numbers")
            rng = np.random.default_rng(self.engine.seed)
            theta = o.prior_loc + o.prior_scale * rng.standard_normal(o.dim)
            x = rng.uniform(-3, 3, size=(o.simulate, o.dim))
            y = x @ theta + o.noise_scale * rng.standard_normal(o.simulate)
            return (*_split(x, y, o.test_fraction, self.engine.seed), theta.tolist())
        if o.data == "diabetes":
            s = diabetes(o.test_fraction or 0.25, seed=self.engine.seed)
            return s.x_train, s.y_train, s.x_test, s.y_test, None
        arrays = load_arrays(o.data)
        if "x" in arrays and "y" in arrays:
            x, y = arrays["x"], arrays["y"]
        elif "table" in arrays and arrays["table"].ndim == 2 and arrays["table"].shape[1] >= 2:
            table = arrays["table"]
            names = [k for k in arrays if k != "table"]
            j = table.shape[1] - 1
            if o.y_col is not None:
                if o.y_col not in names:
                    raise UserError(
                        f"--y-col {o.y_col!r} is not a column of {o.data} ({', '.join(names)})"
                    )
                j = names.index(o.y_col)
            x, y = np.delete(table, j, axis=1), table[:, j]
        else:
            raise UserError(f"data file {o.data} needs arrays x and y (or a table of >= 2 columns)")
        x = np.asarray(x, dtype=np.float64)
        x = x[:, None] if x.ndim == 1 else x
        y = np.asarray(y, dtype=np.float64)
        if x.ndim != 2 or y.ndim != 1 or len(x) != len(y):
            raise UserError(
                f"data file {o.data}: x must be N x D and y of length N, "
                f"got x {x.shape}, y {y.shape}"
            )
        if len(x) < 2:
            raise UserError(f"data file {o.data}: needs at least 2 rows")
        return (*_split(x, y, o.test_fraction, self.engine.seed), None)

    def build(self) -> Problem:
        o = self.model_options
        x, y, x_test, y_test, theta_true = self._data()
        kw = {"prior_loc": o.prior_loc, "prior_scale": o.prior_scale, "noise_scale": o.noise_scale}
        make = {"full-covariance": lr_guides.full_covariance, "mean-field": lr_guides.mean_field}
        if self.settings.guide not in make:
            raise UserError(
                f"linreg has guides {', '.join(self.guides)}, not {self.settings.guide!r}"
            )
        guide = make[self.settings.guide](linreg.model)
        mu, cov = linreg.posterior(x, y, **kw)
        return Problem(
            linreg.model,
            guide,
            {"x": x, "y": y, **kw},
            data_size=len(x),
            extra={
                "x_test": x_test,
                "y_test": y_test,
                "mu_N": mu,
                "Sigma_N": cov,
                "theta_true": theta_true,
            },
        )

    def exact_marginals(self, problem: Problem) -> dict[str, dict[str, list[float]]]:
        """Means and stds of the exact posterior of ``theta`` (for NUTS runs and ``compare``)."""
        mu, cov = problem.extra["mu_N"], problem.extra["Sigma_N"]
        return {"theta": {"mean": mu.tolist(), "std": cov.diagonal().sqrt().tolist()}}

    def _fitted(self, problem: Problem) -> tuple[torch.Tensor, torch.Tensor]:
        loc, cov = lr_guides.gaussian(problem.guide)
        return loc.cpu().double(), cov.cpu().double()

    def _test_loglik(self, problem: Problem, loc, cov) -> float | None:
        x_te, y_te = problem.extra["x_test"], problem.extra["y_test"]
        if len(x_te) == 0:
            return None
        return (
            linreg.predictive(x_te, loc, cov, self.model_options.noise_scale)
            .log_prob(y_te.double())
            .mean()
            .item()
        )

    def summarize(self, problem: Problem) -> dict[str, Any]:
        mu, cov = problem.extra["mu_N"], problem.extra["Sigma_N"]
        loc, qcov = self._fitted(problem)
        kl = kl_divergence(MultivariateNormal(loc, qcov), MultivariateNormal(mu, cov)).item()
        # Monte Carlo predictive from the guide's own samples, as a user would compute it
        x_te, y_te = problem.extra["x_test"], problem.extra["y_test"]
        mc = None
        if len(x_te):
            dev = problem.data["x"].device
            theta = sample_posterior(problem.guide, problem.data, 2000, ["theta"])["theta"]
            theta = theta.reshape(2000, -1).double().cpu()
            lp = torch.distributions.Normal(
                x_te.double() @ theta.T, self.model_options.noise_scale
            ).log_prob(y_te.double()[:, None])
            mc = (torch.logsumexp(lp, 1) - np.log(2000)).mean().item()
            del dev
        return {
            "data": {
                "n_train": len(problem.data["x"]),
                "n_test": len(x_te),
                "dim": mu.numel(),
                "source": "simulated" if self.model_options.simulate else self.model_options.data,
            },
            "theta_true": problem.extra["theta_true"],
            "exact_posterior": {
                "mean": mu.tolist(),
                "std": cov.diagonal().sqrt().tolist(),
                "cov": cov.tolist(),
            },
            "mean_field_optimum_std": linreg.mean_field_optimum_variance(cov).sqrt().tolist(),
            "fitted": {
                "mean": loc.tolist(),
                "std": qcov.diagonal().sqrt().tolist(),
                "cov": qcov.tolist(),
                "kl_to_exact": kl,
                "max_abs_mean_error": (loc - mu).abs().max().item(),
            },
            "test_loglik": {
                "exact": self._test_loglik(problem, mu, cov),
                "fitted": self._test_loglik(problem, loc, qcov),
                "fitted_monte_carlo": mc,
            },
        }

    def evaluate(self, problem: Problem, out: Path) -> dict[str, Any]:
        s = self.summarize(problem)
        return {
            "kl_to_exact": s["fitted"]["kl_to_exact"],
            "max_abs_mean_error": s["fitted"]["max_abs_mean_error"],
            "test_loglik": s["test_loglik"],
        }

    def predict(self, problem: Problem, path: Path) -> dict[str, Any]:
        arrays = load_arrays(path)
        x = arrays.get("x", arrays.get("table"))
        x = np.asarray(x if x is not None else next(iter(arrays.values())), dtype=np.float64)
        x = x[:, None] if x.ndim == 1 else x
        d = problem.extra["mu_N"].numel()
        if x.ndim != 2 or x.shape[1] != d:
            raise UserError(f"{path}: inputs must be N x {d}, got {x.shape}")
        loc, qcov = self._fitted(problem)
        p = linreg.predictive(torch.as_tensor(x), loc, qcov, self.model_options.noise_scale)
        return {
            "mean": p.mean.tolist(),
            "std": p.stddev.tolist(),
            "lower_95": (p.mean - 1.96 * p.stddev).tolist(),
            "upper_95": (p.mean + 1.96 * p.stddev).tolist(),
        }
