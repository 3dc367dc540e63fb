"""The ELBO objects the engine trains with, and the estimator that pairs one with its rewrites.

``L(lambda) = E_q[log p(x, z) - log q(z | lambda)]``. An :class:`Estimator`'s loss is its ELBO's
own ``differentiable_loss`` -- the engine never re-implements an ELBO, so any Pyro ELBO
(``TraceMeanField_ELBO`` with its analytic KL, ``TraceTailAdaptive_ELBO``, ...) computes exactly
what Pyro computes; one without ``differentiable_loss`` (``RenyiELBO``) is trained through its own
``loss_and_grads``.

Three subclasses only remove host synchronisation: Pyro's ``Trace_ELBO.differentiable_loss``
and ``TraceMeanField_ELBO`` read every particle's ELBO with ``.item()`` and ``TraceGraph_ELBO``
has no ``differentiable_loss``; :class:`SyncFreeTrace_ELBO`, :class:`SyncFreeTraceMeanField_ELBO`
and :class:`SyncFreeTraceGraph_ELBO` sum the same per-particle terms on the device (NaN is
caught by the training loop when it logs).
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from pyro.distributions import TorchDistribution
from pyro.distributions.util import is_identically_zero
from pyro.infer import ELBO, Trace_ELBO, TraceGraph_ELBO, TraceMeanField_ELBO, trace_mean_field_elbo
from pyro.infer.trace_elbo import _compute_log_r
from pyro.poutine.messenger import Messenger


class SyncFreeTrace_ELBO(Trace_ELBO):
    """:class:`~pyro.infer.Trace_ELBO` whose ``differentiable_loss`` never waits on the device.

    Value ``-ELBO``, gradient the pathwise one for reparameterizable sites and
    ``(log p - log q) grad log q`` for the others, per particle as ``Trace_ELBO`` computes them.
    """

    def differentiable_loss(self, model, guide, *args, **kwargs) -> torch.Tensor:  # noqa: D102
        value = surrogate = 0.0
        for model_trace, guide_trace in self._get_traces(model, guide, args, kwargs):
            v, s = _trace_elbo_particle(model_trace, guide_trace)
            value, surrogate = value + v, surrogate + s
        loss = -surrogate / self.num_particles
        return loss + (-value / self.num_particles - loss).detach()


class SyncFreeTraceGraph_ELBO(TraceGraph_ELBO):
    """:class:`~pyro.infer.TraceGraph_ELBO` with a ``differentiable_loss``: value ``-ELBO``,
    gradient the Rao-Blackwellised score-function surrogate (baselines included)."""

    def differentiable_loss(self, model, guide, *args, **kwargs) -> torch.Tensor:  # noqa: D102
        value, surrogate = self._loss_and_surrogate_loss(model, guide, args, kwargs)
        return surrogate + (-value - surrogate).detach()


class SyncFreeTraceMeanField_ELBO(TraceMeanField_ELBO):
    """:class:`~pyro.infer.TraceMeanField_ELBO` whose ``differentiable_loss`` never waits on
    the device: Pyro's reads each particle's ELBO with ``.item()``; its surrogate
    ``-ELBO`` (analytic KL where Pyro knows it, ``log p - log q`` at the draw elsewhere) has
    the same value, and is the loss here."""

    def differentiable_loss(self, model, guide, *args, **kwargs) -> torch.Tensor:  # noqa: D102
        loss = 0.0
        for model_trace, guide_trace in self._get_traces(model, guide, args, kwargs):
            with _item_detached(trace_mean_field_elbo):
                _, surrogate = self._differentiable_loss_particle(model_trace, guide_trace)
            loss = loss + surrogate / self.num_particles
        return loss


@contextmanager
def _item_detached(module):
    """``module.torch_item(x)`` returns ``x.detach()`` (a tensor, no host read) meanwhile."""
    item = module.torch_item
    module.torch_item = lambda x: x.detach() if torch.is_tensor(x) else x
    try:
        yield
    finally:
        module.torch_item = item


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


def _identity(fn: Callable) -> Callable:
    return fn


@dataclass(frozen=True)
class Capabilities:
    """What an estimator supports, declared by its factory: the engine and the workflows read
    these flags, never the estimator's name.

    :param compilable: the whole step is one differentiable loss whose state between steps
        lives in tensors (parameter-store entries the loss replaces, such as the score
        function's baselines; tensors a scheduled estimator changes in place, its
        ``graph_inputs``): ``--compile`` can trace it (:mod:`bayesdl.inference.compiled`).
    :param data_parallel: its loss is differentiable, so ``DistributedDataParallel`` can wrap
        it (``torchrun``: :mod:`bayesdl.inference.distributed`).
    :param stateful: it keeps state between steps, in parameter-store entries it replaces:
        the score function's decaying-average baselines, one per site and input (not
        broadcast over vectorized particles).
    :param scheduled: it changes with the step (``set_step(step, total)``: a temperature).
    :param enumerates: it sums discrete latent sites out exactly, so a guide over the
        continuous sites suffices.
    :param discrete: it is meant for discrete latent sites (sums them out, scores them with
        baselines or relaxes them); the others are pathwise estimators for continuous ones.
    """

    compilable: bool = False
    data_parallel: bool = False
    stateful: bool = False
    scheduled: bool = False
    enumerates: bool = False
    discrete: bool = False


@dataclass
class Estimator:
    """A Pyro ELBO plus the model/guide rewrites it needs (score function, enumeration, ...).

    :param elbo: any :class:`~pyro.infer.ELBO`; its own ``differentiable_loss`` is the loss.
    :param wrap_model: rewrite of the model (e.g. ``config_enumerate``).
    :param wrap_guide: rewrite of the guide (e.g. :class:`ScoreFunction`).
    :param capabilities: what it supports (:class:`Capabilities`); when not declared (an
        estimator registered from outside), nothing beyond data-parallel runs of a
        differentiable loss.
    """

    name: str
    elbo: ELBO
    wrap_model: Callable = _identity
    wrap_guide: Callable = _identity
    capabilities: Capabilities | None = None

    def __post_init__(self) -> None:
        if self.capabilities is None:
            self.capabilities = Capabilities(data_parallel=self.differentiable)

    @property
    def differentiable(self) -> bool:
        """Whether the ELBO gives a differentiable loss (else it computes its own gradients)."""
        return callable(getattr(self.elbo, "differentiable_loss", None))

    def loss(self, model, guide, *args, **kwargs) -> torch.Tensor:
        """``-ELBO`` as a differentiable surrogate: ``self.elbo.differentiable_loss``."""
        if not self.differentiable:
            raise TypeError(
                f"{type(self.elbo).__name__} has no differentiable_loss; use loss_and_grads"
            )
        return self.elbo.differentiable_loss(model, guide, *args, **kwargs)

    def loss_and_grads(self, model, guide, *args, **kwargs) -> torch.Tensor:
        """``-ELBO`` (detached) after accumulating its gradient into the parameters' ``.grad``."""
        if self.differentiable:
            loss = self.loss(model, guide, *args, **kwargs)
            loss.backward()
            return loss.detach()
        return torch.as_tensor(float(self.elbo.loss_and_grads(model, guide, *args, **kwargs)))
