"""``import bayesdl`` then ``bayesdl.bnn`` / ``bayesdl.calibration`` as attributes, as with
``torch.nn`` or ``pyro.infer``: imported on first use, nothing heavy at ``import bayesdl``."""

from __future__ import annotations

import subprocess
import sys

import pytest


def _python(code: str) -> str:
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=300
    ).stdout


def test_submodules_are_attributes_imported_on_first_use():
    out = _python(
        "import sys, bayesdl\n"
        "print('torch' in sys.modules, 'bayesdl.bnn' in sys.modules)\n"
        "f = bayesdl.bnn.bayesian\n"
        "print('bayesdl.bnn' in sys.modules, callable(f), callable(bayesdl.calibration.sbc))\n"
        "print('bnn' in dir(bayesdl))"
    )
    assert out.split() == ["False", "False", "True", "True", "True", "True"]


def test_unknown_attributes_still_raise():
    import bayesdl

    with pytest.raises(AttributeError, match="no attribute 'nosuch'"):
        bayesdl.nosuch  # noqa: B018
