"""``relaxed``: the Concrete / Gumbel-softmax estimator for categorical latent sites.

Every unobserved Categorical site, in model and guide, becomes :class:`LinearConcrete`:
samples ``w = softmax((log q + g) / tau)`` with Gumbel noise ``g`` (Maddison et al. 2017; Jang
et al. 2017), differentiable in ``log q``, and log-mass extended linearly to the simplex,
``log q(w) := sum_k w_k log q_k``. At a vertex ``w = e_z`` this is the categorical ``log q(z)``,
so the ELBO's integrand is the discrete one wherever the model reads ``w`` as a vertex; as
``tau -> 0`` samples reach the vertices and the pathwise gradient tends to the discrete ELBO's
gradient (biased for ``tau > 0``, with variance growing as ``tau`` falls). The model must accept a
simplex point where it expects the category (e.g. ``models.stochastic_depth.select_depth``).

The temperature follows ``tau_t = tau_0 (tau_T / tau_0)^(t / T)`` (geometric, as Jang et al.'s
exponential decay) through :meth:`RelaxedEstimator.set_step`, which the engine's loop calls each
step; ``tau`` is a tensor changed in place, an input of a compiled step's graph.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from pyro.distributions import TorchDistribution, constraints
from pyro.poutine.messenger import Messenger

from bayesdl.inference.elbo import Capabilities, Estimator, SyncFreeTrace_ELBO

#: (tau_0, tau_T): the default temperature schedule of ``--estimator relaxed``
TEMPERATURE = (1.0, 0.3)


class LinearConcrete(TorchDistribution):
    """``w ~ Concrete(tau, logits)`` with ``log_prob(w) = sum_k w_k log_softmax(logits)_k``."""

    arg_constraints: dict = {}
    support = constraints.simplex
    has_rsample = True

    def __init__(self, temperature: float | torch.Tensor, logits: torch.Tensor):
        self.temperature = temperature
        self.logits = logits - logits.logsumexp(-1, keepdim=True)
        super().__init__(logits.shape[:-1], logits.shape[-1:], validate_args=False)

    def rsample(self, sample_shape: torch.Size | tuple = ()) -> torch.Tensor:
        """``softmax((logits + Gumbel) / tau)``."""
        shape = self._extended_shape(torch.Size(sample_shape))
        u = torch.rand(shape, dtype=self.logits.dtype, device=self.logits.device)
        tiny = torch.finfo(u.dtype).tiny
        gumbel = -(-(u.clamp(tiny, 1.0 - 1e-7)).log()).log()
        return ((self.logits + gumbel) / self.temperature).softmax(-1)

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        """The categorical log-mass extended linearly: ``sum_k w_k log q_k``."""
        return (value * self.logits).sum(-1)

    def expand(self, batch_shape, _instance=None):  # noqa: D102
        batch_shape = torch.Size(batch_shape)
        return LinearConcrete(self.temperature, self.logits.expand(batch_shape + self.event_shape))


class Relax(Messenger):
    """Replace every unobserved Categorical sample site by :class:`LinearConcrete` at
    ``self.temperature``."""

    def __init__(self, temperature: float = TEMPERATURE[0]):
        super().__init__()
        #: a 0-d tensor changed in place (:meth:`RelaxedEstimator.set_step`): a compiled step
        #: reads it as an input of its graph
        self.temperature = torch.tensor(float(temperature))

    def _pyro_sample(self, msg):
        if msg["is_observed"] or not isinstance(msg["fn"], torch.distributions.Categorical):
            return
        msg["fn"] = LinearConcrete(self.temperature, msg["fn"].logits)


@dataclass
class RelaxedEstimator(Estimator):
    """:class:`~pyro.infer.Trace_ELBO` (sync-free) on the relaxed model and guide, annealed
    temperature."""

    relax: Relax = field(default_factory=Relax)
    schedule: tuple[float, float] = TEMPERATURE

    def set_step(self, step: int, total: int) -> None:
        """Set ``tau`` for ``step`` of ``total`` (geometric from ``tau_0`` to ``tau_T``)."""
        t0, t1 = self.schedule
        self.relax.temperature.fill_(t0 * (t1 / t0) ** (step / max(1, total - 1)))

    @property
    def graph_inputs(self) -> list[torch.Tensor]:
        """The tensors :meth:`set_step` changes in place: inputs of a compiled step's graph."""
        return [self.relax.temperature]


def make_relaxed(
    particles: int = 1,
    vectorize: bool = False,
    max_plate_nesting: float = float("inf"),
    schedule: tuple[float, float] = TEMPERATURE,
) -> RelaxedEstimator:
    """The ``relaxed`` estimator (a factory of
    :data:`bayesdl.inference.estimators.ESTIMATORS`)."""
    relax = Relax(schedule[0])
    return RelaxedEstimator(
        "relaxed",
        SyncFreeTrace_ELBO(
            num_particles=particles,
            vectorize_particles=vectorize,
            max_plate_nesting=max_plate_nesting,
        ),
        wrap_model=lambda m: relax(m),
        wrap_guide=lambda g: relax(g),
        capabilities=Capabilities(
            compilable=True, data_parallel=True, scheduled=True, discrete=True
        ),
        relax=relax,
        schedule=schedule,
    )
