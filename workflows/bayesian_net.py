"""Fitting and evaluating a network made Bayesian by :func:`bayesdl.bnn.bayesian`.

``bayesdl.fit(bnet, data={"x": x, "y": y})`` runs :class:`BayesianNetModel` (the user-model
workflow with the network's own guide); ``bayesdl fit bnn --net FILE.py:make_net`` runs the same
pieces through the ``bnn`` workflow. Predictions are Monte Carlo over ``q(theta)``:
``p(y | x, D) ~= 1/M sum_m p(y | f_{theta_m}(x))``, and their uncertainty is split into its
aleatoric and epistemic parts (:func:`split_uncertainty`).
"""

from __future__ import annotations

import copy
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import torch
from pyro import poutine

import bayesdl.workflows.metrics as metrics
from bayesdl.guides.bayesian_net import GUIDES
from bayesdl.inference.errors import UserError
from bayesdl.inference.predictive import draw
from bayesdl.models.bayesian_net import BayesianNet, Gaussian, Likelihood
from bayesdl.models.uncertainty import split_uncertainty
from bayesdl.workflows.base import Problem
from bayesdl.workflows.user_model import UserModel, _describe, check_arguments

if TYPE_CHECKING:
    from bayesdl.workflows.fit_options import FitOptions

#: posterior draws of a report (predictions, evaluation)
SAMPLES = 100


def network_draws(problem: Problem, x: torch.Tensor, num_samples: int = SAMPLES) -> torch.Tensor:
    """``f_{theta_m}(x)`` for ``m = 1..M`` draws of the fitted ``q``: ``[M, n, *out]`` (call inside
    ``problem.scope()``)."""
    inputs = {"x": x.to(_device(problem)), "y": None}
    return draw(problem.model, problem.guide, inputs, num_samples, ["f"])["f"]


def _device(problem: Problem) -> torch.device:
    return next(
        (v.device for v in problem.data.values() if torch.is_tensor(v)), torch.device("cpu")
    )


def fitted_sigma(problem: Problem) -> torch.Tensor | None:
    """The learned noise sd ``pyro.param("sigma")`` of a Gaussian likelihood (or None)."""
    import pyro

    with problem.scope():
        store = pyro.get_param_store()
        return store["sigma"].detach() if "sigma" in store else None


def scores(
    likelihood: Likelihood, f: torch.Tensor, y: torch.Tensor, sigma: torch.Tensor | None
) -> dict[str, Any]:
    """Held-out scores of the Monte Carlo predictive: accuracy, NLL, ECE, Brier and the entropy
    split for classification; RMSE, log-likelihood per datum, 95 % coverage and the sd split
    for regression."""
    split = split_uncertainty(likelihood, f, sigma)
    y = y.to(f.device)
    if likelihood.classification:
        p = likelihood.probs(f)
        flat = p.reshape(p.shape[0], -1, p.shape[-1])
        labels = y.reshape(-1).long()
        return {
            "n": len(y),
            "samples": f.shape[0],
            "accuracy": metrics.accuracy(flat, labels),
            "nll": metrics.nll(flat, labels),
            "ece": metrics.ece(flat, labels, bins=15),
            "brier": metrics.brier(flat, labels),
            "entropy": split["entropy"].mean().item(),
            "expected_entropy": split["expected_entropy"].mean().item(),
            "mutual_information": split["mutual_information"].mean().item(),
        }
    if isinstance(likelihood, Gaussian):
        mu, sd = likelihood.mean_sd(f, 2, sigma=sigma)
        yy = y.reshape(mu.shape[1:]).to(mu.dtype)
        logp = torch.distributions.Normal(mu, sd).log_prob(yy)
    else:
        event = likelihood.event(tuple(f.shape[2:]))
        rate = likelihood._reshape(f, 2, event).clamp(max=30).exp()
        yy = y.reshape(rate.shape[1:]).to(rate.dtype)
        logp = torch.distributions.Poisson(rate).log_prob(yy)
    m = f.shape[0]
    loglik = (torch.logsumexp(logp, 0) - math.log(m)).reshape(len(y), -1).sum(-1)
    err = split["mean"] - yy
    inside = (err.abs() <= 1.96 * split["sd"]).float()
    return {
        "n": len(y),
        "samples": m,
        "rmse": err.pow(2).mean().sqrt().item(),
        "log_likelihood": loglik.mean().item(),
        "coverage_95": inside.mean().item(),
        "sd": split["sd"].mean().item(),
        "sd_noise": split["sd_noise"].mean().item(),
        "sd_model": split["sd_model"].mean().item(),
    }


def net_summary(problem: Problem) -> dict[str, Any]:
    """What was made Bayesian, with which prior and guide, and what the fit learned of the
    noise and of sparsity."""
    from bayesdl.bnn import sparsity

    bnet: BayesianNet = problem.model
    n_all = sum(p.numel() for p in bnet.net.parameters())
    out: dict[str, Any] = {
        "guide": bnet.guide_name,
        "prior": getattr(bnet.prior, "family", None),
        "likelihood": type(bnet.likelihood).__name__.lower(),
        "bayesian_parameters": sum(w.numel for w in bnet.weights),
        "deterministic_parameters": n_all - sum(w.numel for w in bnet.weights),
        "bayesian": [w.name for w in bnet.weights],
    }
    sigma = fitted_sigma(problem)
    if sigma is not None:
        out["sigma"] = sigma.item() if sigma.numel() == 1 else sigma.tolist()
    out.update(dropout_rates(bnet))
    if (sp := sparsity(bnet)) is not None:
        out["sparsity"] = {k: v for k, v in sp.items() if k != "per_parameter"}
    return out


def dropout_rates(bnet: BayesianNet) -> dict[str, Any]:
    """The dropout guides' rate ``p`` per layer (by weight name) and whether it was learned
    (``concrete-dropout``, ``gaussian-dropout``: there also ``alpha = p / (1 - p)``, each the
    mean over the layer's weights when ``alpha`` is per weight); empty for other guides."""
    q = bnet.guide
    if not hasattr(q, "rates") or not q.masked:
        return {}
    out: dict[str, Any] = {
        "dropout_rates": q.rates(),
        "dropout_rates_learned": bool(getattr(q, "learn", True)),
    }
    if hasattr(q, "alphas"):
        out["alpha"] = q.alphas()
        out["alpha_per"] = q.per
    return out


def build_problem(
    bnet: BayesianNet, guide: str | None, data: dict[str, Any], where: str
) -> Problem:
    """A fresh copy of ``bnet`` (with the guide ``guide`` where given, else its own), checked by
    one run of guide and model on ``data``; the user's network is never changed."""
    from bayesdl.bnn import rebuild

    if guide in (None, "", "net", bnet.guide_name):
        model = copy.deepcopy(bnet)
    elif isinstance(guide, str) and guide in GUIDES:
        model = copy.deepcopy(rebuild(bnet, guide=guide))
    else:
        raise UserError(
            f"a network from bayesdl.bnn.bayesian comes with its guide; guide= may name another "
            f"of its families ({', '.join(GUIDES)}), not {guide!r}"
        )
    for w in model.weights:  # placeholders: theta (or q's parameters) replaces them in every
        model.net.get_parameter(w.name).requires_grad_(False)  # pass: not trained, no Adam state
    if "x" not in data:
        raise UserError(f"{where} needs data x (and y to fit)")
    check_arguments(model, data, where, "data=")
    try:
        with torch.no_grad():
            guide_trace = poutine.trace(model.guide).get_trace()
            poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace(**data)
    except (ValueError, RuntimeError, TypeError, IndexError) as e:
        raise UserError(f"{where}: {_describe(e)}") from None
    n = len(data["x"])
    return Problem(
        model,
        model.guide,
        data,
        data_size=n,
        extra={"latent": ["theta"] if model.weights else [], "observed": ["y"]},
    )


class BayesianNetModel(UserModel):
    """A network made Bayesian by :func:`bayesdl.bnn.bayesian`, fitted from Python with its own
    guide (``guide=`` may name another of its families)."""

    guides: ClassVar[tuple[str, ...]] = ("net", *GUIDES)
    default_guide: ClassVar[str] = "net"
    fit_defaults: ClassVar[dict[str, Any]] = {"steps": 2000, "lr": 0.01}
    nuts: ClassVar[bool] = False  # theta's density is masked: only its guides fit it
    importance_check: ClassVar[str | None] = (
        "not checked: a Bayesian network's weights are too many for importance sampling to "
        "judge its guide (held-out accuracy, NLL and calibration: bayesdl evaluate)"
    )

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        bnet = cls.__dict__.get("model_fn")
        if isinstance(bnet, staticmethod):
            bnet = bnet.__func__
        if getattr(bnet, "guide_name", None) == "sparse-vd":  # Molchanov et al. warm the KL up
            cls.fit_defaults = {**cls.fit_defaults, "kl_warmup": 500}

    @classmethod
    def where(cls) -> str:
        return "the Bayesian network"

    def derive(self) -> FitOptions:
        """The options naming the network's own guide family (``config.json`` records
        ``meanfield``, say, never ``net``)."""
        if self.settings.guide in (None, "", "net"):
            return self.settings.replace(guide=self.model().guide_name)
        return self.settings

    def build(self) -> Problem:
        data = self.data(self.model_options.data)
        return build_problem(self.model(), self.settings.guide, data, self.where())

    def summarize(self, problem: Problem) -> dict[str, Any]:
        return {"bayesian_net": net_summary(problem)}

    def evaluate(self, problem: Problem, out: Path) -> dict[str, Any]:
        d = problem.data
        f = network_draws(problem, d["x"])
        result: dict[str, Any] = {"bayesian_net": net_summary(problem)}
        if d.get("y") is not None:
            lik = problem.model.likelihood
            result["train"] = scores(lik, f, d["y"], fitted_sigma(problem))
        return result

    def predict(self, problem: Problem, path: Path) -> dict[str, Any]:
        inputs = self.data(str(path), require_y=False)
        return predict_file(problem, inputs, str(path))


def predict_file(problem: Problem, inputs: dict[str, Any], where: str) -> dict[str, Any]:
    """Predictive mean / probabilities and the uncertainty split at the inputs ``x``."""
    x = inputs.get("x", inputs.get("table"))
    if x is None:
        raise UserError(f"{where}: needs an array `x` (an .npz) or columns (--x-cols)")
    x = torch.as_tensor(np.asarray(x)) if not torch.is_tensor(x) else x
    train_x = problem.data["x"]
    if x.dtype.is_floating_point:
        x = x.to(train_x.dtype)
    if tuple(x.shape[1:]) != tuple(train_x.shape[1:]):
        raise UserError(
            f"{where}: inputs have shape {tuple(x.shape[1:])} per row, the network takes "
            f"{tuple(train_x.shape[1:])} (features)"
        )
    try:
        f = network_draws(problem, x)
    except (ValueError, RuntimeError) as e:
        raise UserError(f"{where}: {_describe(e)}") from None
    split = split_uncertainty(problem.model.likelihood, f, fitted_sigma(problem))
    out: dict[str, Any] = {"samples": f.shape[0]}
    out.update({k: v.tolist() for k, v in split.items()})
    if "probs" in split:
        out["predicted"] = split["probs"].argmax(-1).tolist()
    return out
