"""The one inference engine: estimators, the SVI loop, predictive, diagnostics, checkpoints."""

from bayesdl.inference.errors import UserError
from bayesdl.inference.estimators import ESTIMATORS, make_estimator
from bayesdl.inference.train import FitConfig, FitResult, Interrupted, fit, restore

__all__ = [
    "ESTIMATORS",
    "FitConfig",
    "FitResult",
    "Interrupted",
    "UserError",
    "fit",
    "make_estimator",
    "restore",
]
