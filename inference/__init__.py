"""The one inference engine: estimators, the SVI loop, predictive, diagnostics, checkpoints."""

from inference.errors import UserError
from inference.estimators import ESTIMATORS, make_estimator
from inference.train import FitConfig, FitResult, Interrupted, fit, restore

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
