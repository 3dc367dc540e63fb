"""Bayesian linear regression: fitted Gaussian guides against the closed-form posterior."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import bayesdl.cli as cli
from bayesdl.models import linear_regression as linreg


def fit(tmp_path, *args: str) -> dict:
    out = tmp_path / "run"
    assert cli.main(["fit", "linreg", *args, "--quiet", "--out", str(out)]) == 0
    return json.loads((out / "summary.json").read_text())


def test_closed_form_matches_bayes_rule_by_brute_force():
    """Sigma_N, mu_N against the Gaussian conditioning of the joint (theta, y)."""
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(15, 2, generator=g), torch.randn(15, generator=g)
    mu, cov = linreg.posterior(x, y, prior_loc=0.3, prior_scale=2.0, noise_scale=0.5)
    x64, y64 = x.double(), y.double()
    s0 = 4.0 * torch.eye(2, dtype=torch.float64)
    m0 = torch.full((2,), 0.3, dtype=torch.float64)
    k = x64 @ s0 @ x64.T + 0.25 * torch.eye(15, dtype=torch.float64)  # Cov(y)
    gain = s0 @ x64.T @ torch.linalg.inv(k)
    assert torch.allclose(mu, m0 + gain @ (y64 - x64 @ m0), atol=1e-10)
    assert torch.allclose(cov, s0 - gain @ x64 @ s0, atol=1e-10)


def test_full_covariance_guide_matches_exact_posterior_on_diabetes(tmp_path):
    s = fit(tmp_path, "--guide", "full-covariance")
    assert s["data"]["source"] == "diabetes" and s["data"]["dim"] == 10
    assert s["fitted"]["kl_to_exact"] < 0.05
    # the predictive of q is as good as the exact one on held-out data
    t = s["test_loglik"]
    assert t["fitted"] == pytest.approx(t["exact"], abs=0.01)
    assert t["fitted_monte_carlo"] == pytest.approx(t["fitted"], abs=0.01)


def test_mean_field_matches_means_and_underestimates_variances(tmp_path):
    s = fit(tmp_path, "--guide", "mean-field")
    mu = np.array(s["exact_posterior"]["mean"])
    assert np.abs(np.array(s["fitted"]["mean"]) - mu).max() < 0.02
    std_q = np.array(s["fitted"]["std"])
    # the mean-field optimum has variances 1 / diag(Sigma_N^-1), below the exact marginals
    np.testing.assert_allclose(std_q, s["mean_field_optimum_std"], rtol=0.1)
    assert (std_q < np.array(s["exact_posterior"]["std"])).all()


def test_tyxe_pattern_small_data_high_precision(tmp_path):
    """n = 20, d = 2, prior precision 1, noise precision 100 (TyXe's test): a diagonal guide
    matches means and scales within 1e-2; a full-covariance one gives Sigma_q Sigma_N^-1 ~ I."""
    common = ["--simulate", "27", "--dim", "2", "--noise-scale", "0.1", "--test-fraction", "0.25"]
    s = fit(tmp_path / "diag", *common, "--guide", "mean-field")
    assert s["data"]["n_train"] == 20
    np.testing.assert_allclose(s["fitted"]["mean"], s["exact_posterior"]["mean"], atol=1e-2)
    np.testing.assert_allclose(s["fitted"]["std"], s["mean_field_optimum_std"], atol=1e-2)
    s = fit(tmp_path / "full", *common, "--guide", "full-covariance")
    prod = np.array(s["fitted"]["cov"]) @ np.linalg.inv(np.array(s["exact_posterior"]["cov"]))
    np.testing.assert_allclose(prod, np.eye(2), atol=0.05)


def test_one_dimensional_band_figure_and_predict(tmp_path, capsys):
    s = fit(tmp_path, "--simulate", "40", "--dim", "1", "--noise-scale", "0.5", "--steps", "1500")
    assert "linreg_predictive.png" in s["figures"]
    np.savez(tmp_path / "new.npz", x=np.array([[0.0], [2.0]]))
    out = tmp_path / "pred.json"
    assert (
        cli.main(
            [
                "predict",
                str(tmp_path / "run"),
                "--input",
                str(tmp_path / "new.npz"),
                "--output",
                str(out),
            ]
        )
        == 0
    )
    p = json.loads(out.read_text())
    theta = s["exact_posterior"]["mean"][0]
    assert p["mean"] == pytest.approx([0.0, 2 * theta], abs=0.05)
    # predictive std: sqrt(sigma^2 + x^2 Var theta) >= sigma, growing with |x|
    assert 0.5 <= p["std"][0] < p["std"][1]


def test_csv_and_npz_inputs(tmp_path):
    rng = np.random.default_rng(1)
    x = rng.normal(size=(30, 2))
    y = x @ np.array([1.0, -1.0]) + 0.1 * rng.normal(size=30)
    (tmp_path / "d.csv").write_text(
        "a,b,target\n" + "\n".join(f"{a},{b},{t}" for (a, b), t in zip(x, y, strict=True))
    )
    np.savez(tmp_path / "d.npz", x=x, y=y)
    means = []
    for path, extra in ((tmp_path / "d.csv", ["--y-col", "target"]), (tmp_path / "d.npz", [])):
        s = fit(
            tmp_path / path.suffix[1:],
            "--data",
            str(path),
            *extra,
            "--steps",
            "300",
            "--noise-scale",
            "0.1",
        )
        means.append(s["exact_posterior"]["mean"])
    np.testing.assert_allclose(means[0], means[1], atol=1e-6)
    np.testing.assert_allclose(means[0], [1.0, -1.0], atol=0.1)
