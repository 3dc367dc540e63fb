"""The tour's SBC section (:mod:`bayesdl.reports.tour_sbc`) with its quick settings, and its
closed form (the exact posterior of the regression against NumPy's least squares)."""

from __future__ import annotations

import base64
import json
import re

import numpy as np
import pytest

from bayesdl.inference.errors import UserError
from bayesdl.reports import tour_sbc

pytestmark = pytest.mark.filterwarnings("ignore:.*has not converged")


def test_closed_form_is_the_gaussian_posterior():
    """Posterior mean (Lambda^-1 X^T y / s^2) agrees with ridge least squares, and the
    correlated design's coefficients correlate at about -0.95, the orthogonal one's at 0."""
    for name, data in tour_sbc.DESIGNS:
        csv = tour_sbc.EXAMPLES / "data" / data
        table = np.loadtxt(csv, delimiter=",", skiprows=1)
        x, y = table[:, :2], table[:, 2]
        cf = tour_sbc.closed_form(csv)
        ridge = np.linalg.solve(x.T @ x + tour_sbc.NOISE**2 * np.eye(2), x.T @ y)
        precision = np.eye(2) + x.T @ x / tour_sbc.NOISE**2
        np.testing.assert_allclose(np.linalg.solve(precision, x.T @ y / 0.25), ridge)
        assert (cf["mean_field_sd"] <= cf["sd"] + 1e-12).all()
        if name == "correlated":
            assert cf["corr"] < -0.9 and (cf["mean_field_sd"] / cf["sd"] < 0.4).all()
        else:
            assert abs(cf["corr"]) < 1e-3


def test_quick_section_has_both_histograms_and_verdicts(tmp_path):
    (section,) = tour_sbc.sections(tmp_path, quick=True)
    images = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', section)
    assert len(images) == 2
    assert all(base64.b64decode(i).startswith(b"\x89PNG") for i in images)
    table = re.findall(r"<table>(.*?)</table>", section, re.S)[0]
    assert table.count("<tr>") == 3 and "bayesdl sbc" in section
    for name, _ in tour_sbc.DESIGNS:
        saved = json.loads((tmp_path / "sbc" / name / "sbc.json").read_text())
        assert saved["replications_ranked"] == 10 and saved["verdict"] in table
    with pytest.raises(UserError, match="already exists"):
        tour_sbc.refuse_existing(tmp_path)
