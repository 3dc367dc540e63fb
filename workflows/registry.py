"""The names of the models: ``bayesdl list`` and ``bayesdl fit NAME`` read this table.

A workflow class (model + guides + data + reports) registers itself with::

    @register
    class Coin(Workflow):
        name = "coin"
        ...

User files use the same decorator (``bayesdl fit NAME --plugin FILE``).
"""

from __future__ import annotations

from typing import Any

REGISTRY: dict[str, Any] = {}


def register(cls):
    """Class decorator: add a workflow to :data:`REGISTRY` under ``cls.name``."""
    name = getattr(cls, "name", None)
    if not name:
        raise ValueError(f"{cls.__name__} needs a class attribute `name` to be registered")
    REGISTRY[name] = cls
    return cls
