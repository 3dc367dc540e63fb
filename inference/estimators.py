"""Gradient estimators of the ELBO, by name: each one of Pyro's ELBO classes.

``L(lambda) = E_q[log p(x, z) - log q(z | lambda)]`` and its gradient by

* ``reparam`` -- pathwise: ``z = g(eps, lambda)`` (:class:`~pyro.infer.Trace_ELBO`);
* ``score``   -- REINFORCE / log-derivative trick for *every* latent site, even
  reparameterizable ones: ``E_q[(log p - log q - b) grad log q]``, Rao-Blackwellised
  through the plate structure with decaying-average baselines ``b``
  (:class:`~pyro.infer.TraceGraph_ELBO`; Williams 1992, Schulman et al. 2015);
* ``enum``    -- discrete latent sites summed out exactly (:class:`~pyro.infer.TraceEnum_ELBO`);
* ``relaxed`` -- Concrete relaxation of categorical sites (:mod:`bayesdl.inference.relaxed`);
* ``meanfield`` -- :class:`~pyro.infer.TraceMeanField_ELBO`: analytic KL where Pyro knows it.

Each factory declares what its estimator supports (:class:`~bayesdl.inference.elbo.Capabilities`:
compilable, data-parallel, stateful, scheduled, enumerates, discrete); the engine and the
workflows read those flags, never the name. Register another one in :data:`ESTIMATORS`: a
factory ``(particles, vectorize, max_plate_nesting) -> Estimator`` around any Pyro ELBO, with
its ``capabilities``; its own loss is used unchanged.
"""

from __future__ import annotations

from collections.abc import Callable

from pyro.infer import TraceEnum_ELBO, config_enumerate

from bayesdl.inference.elbo import (
    Capabilities,
    Estimator,
    ScoreFunction,
    SyncFreeTrace_ELBO,
    SyncFreeTraceGraph_ELBO,
    SyncFreeTraceMeanField_ELBO,
)
from bayesdl.inference.errors import UserError
from bayesdl.inference.relaxed import make_relaxed

__all__ = [
    "ESTIMATORS",
    "Capabilities",
    "Estimator",
    "ScoreFunction",
    "capabilities",
    "make_estimator",
    "marked_for_enumeration",
    "names_with",
]

#: a pathwise estimator whose step is one differentiable loss with no state between steps
PATHWISE = Capabilities(compilable=True, data_parallel=True)


def _reparam(particles: int, vectorize: bool, max_plate_nesting: float) -> Estimator:
    return Estimator(
        "reparam",
        SyncFreeTrace_ELBO(
            num_particles=particles,
            vectorize_particles=vectorize,
            max_plate_nesting=max_plate_nesting,
        ),
        capabilities=PATHWISE,
    )


def _score(particles: int, vectorize: bool, max_plate_nesting: float) -> Estimator:
    return Estimator(
        "score",
        SyncFreeTraceGraph_ELBO(
            num_particles=particles,
            vectorize_particles=vectorize,
            max_plate_nesting=max_plate_nesting,
        ),
        wrap_guide=lambda g: ScoreFunction()(g),
        capabilities=Capabilities(
            compilable=True, data_parallel=True, stateful=True, discrete=True
        ),
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
        capabilities=Capabilities(
            compilable=True, data_parallel=True, enumerates=True, discrete=True
        ),
    )


def _meanfield(particles: int, vectorize: bool, max_plate_nesting: float) -> Estimator:
    return Estimator(
        "meanfield",
        SyncFreeTraceMeanField_ELBO(
            num_particles=particles,
            vectorize_particles=vectorize,
            max_plate_nesting=max_plate_nesting,
        ),
        capabilities=PATHWISE,
    )


#: name -> factory(particles, vectorize, max_plate_nesting) -> Estimator
ESTIMATORS: dict[str, Callable[[int, bool, float], Estimator]] = {
    "reparam": _reparam,
    "score": _score,
    "enum": _enum,
    "relaxed": make_relaxed,
    "meanfield": _meanfield,
}


def make_estimator(
    name: str,
    particles: int = 1,
    vectorize: bool = True,
    max_plate_nesting: float = float("inf"),
) -> Estimator:
    """Build the named estimator; ``particles`` samples, vectorized when ``vectorize``."""
    if name not in ESTIMATORS:
        raise UserError(f"unknown estimator {name!r}; choose one of {', '.join(ESTIMATORS)}")
    if particles < 1:
        raise UserError(f"--particles must be >= 1, got {particles}")
    return ESTIMATORS[name](particles, vectorize and particles > 1, max_plate_nesting)


def capabilities(name: str) -> Capabilities:
    """What the named estimator supports (:class:`~bayesdl.inference.elbo.Capabilities`)."""
    return make_estimator(name).capabilities


def names_with(flag: str) -> list[str]:
    """The registered estimators whose capability ``flag`` is set, in registry order."""
    return [name for name in ESTIMATORS if getattr(capabilities(name), flag)]


def marked_for_enumeration(sites: list[dict]) -> bool:
    """Whether every one of these discrete sample sites (trace nodes) is marked for
    enumeration (``@config_enumerate``, ``infer={"enumerate": "parallel"}``) and can be: the
    model asks for the ``enum`` estimator."""
    return bool(sites) and all(
        s["infer"].get("enumerate") in ("parallel", "sequential")
        and getattr(s["fn"], "has_enumerate_support", False)
        for s in sites
    )
