"""Coin tossing, fitted three ways: full Bayes (Beta guide), MAP and MLE (point guides)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyro
import torch
from torch.distributions import Beta, kl_divergence

import bayesdl.guides.coin as coin_guides
import bayesdl.models.coin as coin
from bayesdl.datasets.io import load_arrays
from bayesdl.inference.errors import UserError
from bayesdl.inference.predictive import sample_posterior
from bayesdl.workflows.base import Problem, Workflow
from bayesdl.workflows.registry import register

#: the most flips --heads/--tails or --simulate make (a tensor of 40 MB)
MAX_FLIPS = 10_000_000


@dataclass(frozen=True)
class CoinOptions:
    """The data (one way: counts, flips, a file or a simulation) and the Beta prior."""

    prior_a: float = field(default=1.0, metadata={"help": "Beta prior a (default 1: uniform)"})
    prior_b: float = field(default=1.0, metadata={"help": "Beta prior b (default 1)"})
    heads: int | None = field(default=None, metadata={"help": "number of heads observed"})
    tails: int | None = field(default=None, metadata={"help": "number of tails observed"})
    flips: str | None = field(
        default=None, metadata={"help": "comma-separated flips, e.g. 1,0,1,1"}
    )
    data: str | None = field(
        default=None,
        metadata={"help": "file of 0/1 flips (.csv, .txt, .npy, or .npz with `flips`)"},
    )
    simulate: float | None = field(
        default=None, metadata={"help": "simulate flips with P(heads)=P", "metavar": "P"}
    )
    n: int = field(default=20, metadata={"help": "number of simulated flips (default 20)"})


@register
class Coin(Workflow):
    """``pi ~ Beta(a, b)``, ``x_n ~ Bern(pi)``: exact posterior known, three estimates compared."""

    name = "coin"
    report = "coin"
    description = "coin tossing, Beta-Bernoulli: full Bayes vs MAP vs MLE"
    latent = "continuous"
    default_estimator = "reparam"
    guides = ("beta", "map", "mle")
    default_guide = "beta"
    options = CoinOptions
    fit_defaults = {"steps": 2000, "lr": 0.1, "lr_schedule": "linear", "particles": 8}
    nuts = True  # --inference nuts: checked against Beta(a + h, b + t)
    tour_runs = [
        ["--heads", "3", "--tails", "0", "--guide", g, "--steps", "1500"]
        for g in ("beta", "map", "mle")
    ]

    def _flips(self) -> torch.Tensor:
        o = self.model_options
        sources = [
            o.heads is not None or o.tails is not None,
            o.flips,
            o.data,
            o.simulate is not None,
        ]
        if sum(bool(s) for s in sources) > 1:
            raise UserError(
                "give the flips one way: --heads/--tails, --flips, --data or --simulate"
            )
        if not (0 < o.prior_a < math.inf and 0 < o.prior_b < math.inf):
            raise UserError(
                f"--prior-a and --prior-b must be positive finite numbers, got {o.prior_a} and "
                f"{o.prior_b}"
            )
        if o.flips:
            try:
                x = np.array([float(v) for v in o.flips.split(",") if v.strip()])
            except ValueError:
                raise UserError(
                    f"--flips must be comma-separated 0/1 values, got {o.flips!r}"
                ) from None
        elif o.data:
            arrays = load_arrays(o.data)
            x = arrays.get("flips", arrays.get("table", next(iter(arrays.values()))))
            x = np.asarray(x, dtype=np.float64).reshape(-1)
        elif o.simulate is not None:
            if not 0 <= o.simulate <= 1:
                raise UserError(f"--simulate takes a probability in [0, 1], got {o.simulate}")
            if not 0 <= o.n <= MAX_FLIPS:
                raise UserError(f"--n must be between 0 and {MAX_FLIPS:,}, got {o.n}")
            rng = np.random.default_rng(self.engine.seed)
            x = (rng.random(o.n) < o.simulate).astype(np.float64)
        else:
            h, t = o.heads or 0, o.tails or 0
            if h < 0 or t < 0:
                raise UserError("--heads and --tails must be >= 0")
            if h + t > MAX_FLIPS:
                raise UserError(f"--heads and --tails: at most {MAX_FLIPS:,} flips in all")
            x = np.concatenate([np.ones(h), np.zeros(t)])
        if not np.isin(x, (0.0, 1.0)).all():
            raise UserError("coin flips must be 0 or 1")
        return torch.as_tensor(x, dtype=torch.float32)

    def build(self) -> Problem:
        o = self.model_options
        flips = self._flips()
        guide = {"beta": coin_guides.beta, "map": coin_guides.delta, "mle": coin_guides.delta}
        if self.settings.guide not in guide:
            raise UserError(
                f"coin has guides {', '.join(self.guides)}, not {self.settings.guide!r}"
            )
        if self.settings.guide == "mle" and flips.numel() == 0:
            raise UserError("the MLE needs at least one flip")
        data = {
            "flips": flips,
            "prior_a": o.prior_a,
            "prior_b": o.prior_b,
            "mle": self.settings.guide == "mle",
        }
        h = int(flips.sum())
        return Problem(
            coin.model,
            guide[self.settings.guide],
            data,
            data_size=flips.numel(),
            extra={"heads": h, "tails": flips.numel() - h},
        )

    def exact_marginals(self, problem: Problem) -> dict[str, dict[str, float]]:
        """Mean and std of the exact posterior of ``pi`` (for NUTS runs and ``compare``)."""
        a, b = (
            (1.0, 1.0)
            if problem.data["mle"]
            else (self.model_options.prior_a, self.model_options.prior_b)
        )
        pa, pb = coin.posterior(a, b, problem.extra["heads"], problem.extra["tails"])
        q = Beta(torch.tensor(pa), torch.tensor(pb))
        return {"pi": {"mean": q.mean.item(), "std": q.stddev.item()}}

    def summarize(self, problem: Problem) -> dict[str, Any]:
        a, b = self.model_options.prior_a, self.model_options.prior_b
        h, t = problem.extra["heads"], problem.extra["tails"]
        pa, pb = coin.posterior(a, b, h, t)
        exact = Beta(torch.tensor(pa), torch.tensor(pb))
        out: dict[str, Any] = {
            "data": {"heads": h, "tails": t},
            "prior": {"a": a, "b": b},
            "exact_posterior": {
                "a": pa,
                "b": pb,
                "mean": exact.mean.item(),
                "std": exact.stddev.item(),
            },
            "log_evidence": coin.log_evidence(a, b, h, t),
            "predictive_exact": {
                "bayes": coin.predictive_bayes(a, b, h, t),
                "map": coin.map_estimate(a, b, h, t),
                "mle": coin.mle_estimate(h, t),
            },
        }
        store = pyro.get_param_store()
        if self.settings.guide == "beta":
            q = Beta(store["a_q"].detach().cpu(), store["b_q"].detach().cpu())
            out["fitted"] = {
                "a_q": q.concentration1.item(),
                "b_q": q.concentration0.item(),
                "mean": q.mean.item(),
                "std": q.stddev.item(),
                "kl_to_exact": kl_divergence(q, exact).item(),
                "predictive": q.mean.item(),
            }
        else:
            pi_hat = store["pi_hat"].item()
            out["fitted"] = {"pi_hat": pi_hat, "predictive": pi_hat}
        return out

    def evaluate(self, problem: Problem, out: Path) -> dict[str, Any]:
        s = self.summarize(problem)
        return {
            "exact": s["exact_posterior"],
            "fitted": s["fitted"],
            "predictive_exact": s["predictive_exact"],
        }

    def predict(self, problem: Problem, path: Path) -> dict[str, Any]:
        """Predictive probability of new flips (a file of 0/1): exact and under the fitted q."""
        arrays = load_arrays(path)
        new = np.asarray(arrays.get("flips", next(iter(arrays.values()))), dtype=np.float64).ravel()
        if not np.isin(new, (0.0, 1.0)).all():
            raise UserError(f"{path}: coin flips must be 0 or 1")
        s = self.summarize(problem)
        pa, pb = s["exact_posterior"]["a"], s["exact_posterior"]["b"]
        h, t = int(new.sum()), int(len(new) - new.sum())
        exact = coin.log_evidence(
            pa, pb, h, t
        )  # log p(new | D) = log B(pa+h, pb+t) - log B(pa, pb)
        draws = (
            sample_posterior(problem.guide, problem.data, 4000, ["pi"])["pi"].reshape(-1).double()
        )
        draws = draws.clamp(1e-12, 1 - 1e-12).cpu()
        loglik = h * draws.log() + t * torch.log1p(-draws)
        fitted = (torch.logsumexp(loglik, 0) - np.log(len(draws))).item()
        return {
            "flips": len(new),
            "heads": h,
            "p_next_heads": s["fitted"]["predictive"],
            "log_predictive_exact": exact,
            "log_predictive_fitted": fitted,
        }
