"""bayesdl: Bayesian deep learning with Pyro.

    import bayesdl
    post = bayesdl.fit(model, data={"x": x, "y": y}, guide="auto-mvn")
    post.summary(); post.predict({"x": x_new}); post.save("runs/line")
    bayesdl.load("runs/line")
    bayesdl.sbc(model, data={"x": x, "y": y}, replications=100)   # simulation-based calibration

:func:`fit` takes any Pyro model function or a registered model's name, :func:`load` reopens a
run folder of the CLI or of Python; both return a :class:`Posterior` (a :class:`GuidePosterior`
fitted by VI, or a :class:`DrawsPosterior` of NUTS draws).
"""

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from bayesdl import bnn, calibration
    from bayesdl.api import compare, fit, load, registry
    from bayesdl.calibration import sbc
    from bayesdl.fits.draws import DrawsPosterior
    from bayesdl.fits.fit_info import FitInfo
    from bayesdl.fits.guide_posterior import GuidePosterior
    from bayesdl.fits.posterior import Posterior
    from bayesdl.inference.errors import UserError
    from bayesdl.reports.sbc_report import SBCResult

__version__ = "0.1.0"

# imported on first use: `import bayesdl` (and so `python -m bayesdl`, whose package is imported
# before its __main__ can handle Ctrl-C) does not load torch and Pyro up front
_LAZY = {"fit": "bayesdl.api", "load": "bayesdl.api", "registry": "bayesdl.api"}
_LAZY.update(compare="bayesdl.api", DrawsPosterior="bayesdl.fits.draws")
_LAZY.update(Posterior="bayesdl.fits.posterior", UserError="bayesdl.inference.errors")
_LAZY.update(GuidePosterior="bayesdl.fits.guide_posterior", FitInfo="bayesdl.fits.fit_info")
_LAZY.update(sbc="bayesdl.calibration", SBCResult="bayesdl.reports.sbc_report")


#: public submodules, imported on first attribute access (``bayesdl.bnn.bayesian(...)`` as
#: ``torch.nn`` or ``pyro.infer``), not by ``import bayesdl``
_SUBMODULES = ("bnn", "calibration")


def __getattr__(name: str):
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    if name in _SUBMODULES:
        module = importlib.import_module(f"bayesdl.{name}")
        globals()[name] = module
        return module
    raise AttributeError(f"module 'bayesdl' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY) | set(_SUBMODULES))


__all__ = [
    "DrawsPosterior",
    "FitInfo",
    "GuidePosterior",
    "Posterior",
    "SBCResult",
    "UserError",
    "bnn",
    "calibration",
    "compare",
    "fit",
    "load",
    "registry",
    "sbc",
]
