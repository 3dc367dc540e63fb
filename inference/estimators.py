"""Gradient estimators of the ELBO, each one of Pyro's ELBO classes.

``L(lambda) = E_q[log p(x, z) - log q(z | lambda)]`` and its gradient by

* ``reparam`` -- pathwise: ``z = g(eps, lambda)`` (:class:`~pyro.infer.Trace_ELBO`);
* ``score``   -- REINFORCE / log-derivative trick for *every* latent site, even
  reparameterizable ones: ``E_q[(log p - log q - b) grad log q]``, Rao-Blackwellised
  through the plate structure with decaying-average baselines ``b``
  (:class:`~pyro.infer.TraceGraph_ELBO`; Williams 1992, Schulman et al. 2015);
* ``enum``    -- discrete latent sites summed out exactly (:class:`~pyro.infer.TraceEnum_ELBO`).

Extra estimators register themselves in :data:`ESTIMATORS`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from pyro.distributions import TorchDistribution
from pyro.distributions.util import is_identically_zero
from pyro.infer import ELBO, Trace_ELBO, TraceEnum_ELBO, TraceGraph_ELBO, config_enumerate
from pyro.infer.trace_elbo import _compute_log_r
from pyro.infer.traceenum_elbo import _compute_dice_elbo
from pyro.poutine.messenger import Messenger


class ScoreOnly(TorchDistribution):
    """``base`` with its pathwise gradient switched off: samples are detached, so the ELBO's
    gradient comes from the score function ``grad log q`` (survives ``expand``, unlike
    ``has_rsample_(False)`` on an ``Independent``)."""

    arg_constraints: dict = {}
    has_rsample = False

    def __init__(self, base):
        self.base = base
        super().__init__(base.batch_shape, base.event_shape, validate_args=False)

    @property
    def support(self):
        return self.base.support

    @property
    def has_enumerate_support(self):
        return self.base.has_enumerate_support

    def enumerate_support(self, expand=True):
        return self.base.enumerate_support(expand)

    def sample(self, sample_shape=()):
        return self.base.sample(torch.Size(sample_shape))

    def log_prob(self, value):
        return self.base.log_prob(value)

    def expand(self, batch_shape, _instance=None):
        return ScoreOnly(self.base.expand(batch_shape))

    @property
    def mean(self):
        return self.base.mean

    @property
    def variance(self):
        return self.base.variance


class ScoreFunction(Messenger):
    """Make every latent guide site non-reparameterized and give it a baseline.

    ``baseline`` is passed to ``site["infer"]["baseline"]`` unless the site sets its own
    (decaying average with ``beta = 0.9`` by default, as in Pyro's SVI tutorial part III).
    """

    def __init__(self, baseline: dict | None = None):
        super().__init__()
        self.baseline = (
            {"use_decaying_avg_baseline": True, "baseline_beta": 0.9}
            if baseline is None
            else baseline
        )

    def _pyro_sample(self, msg):
        if msg["is_observed"] or type(msg["fn"]).__name__ == "_Subsample":
            return
        if msg["fn"].has_rsample:
            msg["fn"] = ScoreOnly(msg["fn"])
        if self.baseline and "baseline" not in msg["infer"]:
            msg["infer"] = {**msg["infer"], "baseline": dict(self.baseline)}


@dataclass
class Estimator:
    """An ELBO object plus the guide/model rewrites it needs; ``loss`` is differentiable."""

    name: str
    elbo: ELBO
    wrap_model: Callable = lambda m: m
    wrap_guide: Callable = lambda g: g

    def loss(self, model, guide, *args, **kwargs) -> torch.Tensor:
        """A differentiable surrogate of ``-ELBO``: its value is ``-ELBO``, its gradient the
        estimator's.

        Pyro's own ``differentiable_loss`` reads every site's ``log_prob_sum`` with ``.item()``
        and checks for NaN on the host, which stalls a GPU at every step; here the same
        particle terms (Pyro's ``_get_traces`` and per-particle functions) are summed on the
        device. NaN is caught by the training loop when it logs.
        """
        elbo = self.elbo
        if isinstance(elbo, TraceGraph_ELBO):
            value, surrogate = elbo._loss_and_surrogate_loss(model, guide, args, kwargs)
            return surrogate + (-value - surrogate).detach()
        if isinstance(elbo, TraceEnum_ELBO):
            total = 0.0
            for model_trace, guide_trace in elbo._get_traces(model, guide, args, kwargs):
                particle = _compute_dice_elbo(model_trace, guide_trace)
                if not is_identically_zero(particle):
                    total = total + particle
            if is_identically_zero(total):
                raise ValueError("the ELBO is not differentiable (identically zero)")
            return -total / elbo.num_particles
        if isinstance(elbo, Trace_ELBO):
            value = surrogate = 0.0
            for model_trace, guide_trace in elbo._get_traces(model, guide, args, kwargs):
                v, s = _trace_elbo_particle(model_trace, guide_trace)
                value, surrogate = value + v, surrogate + s
            loss = -surrogate / elbo.num_particles
            return loss + (-value / elbo.num_particles - loss).detach()
        return elbo.differentiable_loss(model, guide, *args, **kwargs)


def _trace_elbo_particle(model_trace, guide_trace) -> tuple:
    """``(log p - log q, surrogate)`` of one particle, as ``Trace_ELBO`` computes them."""
    value = surrogate = 0.0
    log_r = None
    for site in model_trace.nodes.values():
        if site["type"] == "sample":
            value = value + site["log_prob_sum"]
            surrogate = surrogate + site["log_prob_sum"]
    for site in guide_trace.nodes.values():
        if site["type"] == "sample":
            _, score_function_term, entropy_term = site["score_parts"]
            value = value - site["log_prob_sum"]
            if not is_identically_zero(entropy_term):
                surrogate = surrogate - entropy_term.sum()
            if not is_identically_zero(score_function_term):
                if log_r is None:
                    log_r = _compute_log_r(model_trace, guide_trace)
                term = log_r.sum_to(site["cond_indep_stack"])
                surrogate = surrogate + (term * score_function_term).sum()
    return value, surrogate


def _reparam(particles: int, vectorize: bool, max_plate_nesting: float) -> Estimator:
    return Estimator(
        "reparam",
        Trace_ELBO(
            num_particles=particles,
            vectorize_particles=vectorize,
            max_plate_nesting=max_plate_nesting,
        ),
    )


def _score(particles: int, vectorize: bool, max_plate_nesting: float) -> Estimator:
    return Estimator(
        "score",
        TraceGraph_ELBO(
            num_particles=particles,
            vectorize_particles=vectorize,
            max_plate_nesting=max_plate_nesting,
        ),
        wrap_guide=lambda g: ScoreFunction()(g),
    )


def _enum(particles: int, vectorize: bool, max_plate_nesting: float) -> Estimator:
    return Estimator(
        "enum",
        TraceEnum_ELBO(
            num_particles=particles,
            vectorize_particles=vectorize,
            max_plate_nesting=max_plate_nesting,
        ),
        wrap_model=lambda m: config_enumerate(m, default="parallel"),
        wrap_guide=lambda g: config_enumerate(g, default="parallel"),
    )


#: name -> factory(particles, vectorize, max_plate_nesting) -> Estimator
ESTIMATORS: dict[str, Callable[[int, bool, float], Estimator]] = {
    "reparam": _reparam,
    "score": _score,
    "enum": _enum,
}


def make_estimator(
    name: str,
    particles: int = 1,
    vectorize: bool = True,
    max_plate_nesting: float = float("inf"),
) -> Estimator:
    """Build the named estimator; ``particles`` samples, vectorized when ``vectorize``."""
    from bayesdl.inference.errors import UserError

    if name not in ESTIMATORS:
        raise UserError(f"unknown estimator {name!r}; choose one of {', '.join(ESTIMATORS)}")
    if particles < 1:
        raise UserError(f"--particles must be >= 1, got {particles}")
    return ESTIMATORS[name](particles, vectorize and particles > 1, max_plate_nesting)


import bayesdl.inference.relaxed  # noqa: E402, F401  (registers `relaxed` in ESTIMATORS)
