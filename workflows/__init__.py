"""Workflows: one per registered model, wiring data, model, guide and reports to the engine.

Importing this package registers the built-in models in :data:`models.registry.REGISTRY`.
"""

from bayesdl.workflows import (  # noqa: F401  (registration side effect)
    bnn,  # noqa: F401  (registration side effect)
    coin,
    linear_regression,
    ss_vae,  # noqa: F401  (registration side effect)
    stochastic_depth,  # noqa: F401  (registration side effect)
    vae,  # noqa: F401  (registration side effect)
)
