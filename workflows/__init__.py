"""Workflows: one per registered model, wiring data, model, guide and reports to the engine.

Importing this package registers the built-in models in :data:`models.registry.REGISTRY`.
"""

from workflows import coin, linear_regression  # noqa: F401  (registration side effect)
from workflows import bnn  # noqa: F401  (registration side effect)
from workflows import stochastic_depth  # noqa: F401  (registration side effect)
from workflows import vae  # noqa: F401  (registration side effect)
