"""Workflows: one per registered model, wiring data, model, guide and reports to the engine.

Importing this package registers the built-in models in :data:`models.registry.REGISTRY`.
"""

from workflows import coin  # noqa: F401  (registration side effect)
