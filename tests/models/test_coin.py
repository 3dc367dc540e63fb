"""Coin: SVI against the exact Beta posterior, MAP and MLE against their formulas."""

from __future__ import annotations

import json

import pytest

import bayesdl.cli as cli
from bayesdl.models import coin

ARGS = ["--prior-a", "10", "--prior-b", "10", "--heads", "6", "--tails", "4", "--quiet"]


def fit_coin(tmp_path, *extra: str) -> dict:
    out = tmp_path / "run"
    assert cli.main(["fit", "coin", *ARGS, *extra, "--out", str(out)]) == 0
    return json.loads((out / "summary.json").read_text())


def test_closed_forms():
    assert coin.posterior(10, 10, 6, 4) == (16, 14)
    assert coin.predictive_bayes(1, 1, 3, 0) == pytest.approx(4 / 5)  # Laplace's rule
    assert coin.map_estimate(10, 10, 6, 4) == pytest.approx(15 / 28)
    assert coin.mle_estimate(6, 4) == 0.6
    # log p(D) = log B(16, 14) - log B(10, 10), checked against a direct quadrature
    import numpy as np

    pi = np.linspace(1e-6, 1 - 1e-6, 200001)
    from scipy.stats import beta as beta_dist  # scipy comes with scikit-learn

    integrand = pi**6 * (1 - pi) ** 4 * beta_dist(10, 10).pdf(pi)
    assert coin.log_evidence(10, 10, 6, 4) == pytest.approx(
        np.log(np.trapezoid(integrand, pi)), abs=1e-6
    )


def test_reparam_matches_exact_posterior(tmp_path):
    s = fit_coin(tmp_path)
    e, f = s["exact_posterior"], s["fitted"]
    assert (e["a"], e["b"]) == (16, 14)
    assert abs(f["mean"] - e["mean"]) < 0.01
    assert abs(f["std"] - e["std"]) < 0.01
    # the Monte Carlo posterior block agrees with the guide (1000 draws: s.e. 0.003)
    assert s["posterior"]["pi"]["mean"] == pytest.approx(f["mean"], abs=0.012)
    # ELBO <= log evidence, and close to it when q is near the posterior
    assert s["final_elbo"] <= s["log_evidence"] + 0.05
    assert s["log_evidence"] - s["final_elbo"] < 0.1
    assert set(s["figures"]) == {"coin_posterior.png", "coin_predictive.png"}
    assert (tmp_path / "run" / "coin_posterior.png").stat().st_size > 10_000


def test_score_function_matches_exact_posterior(tmp_path):
    s = fit_coin(tmp_path, "--estimator", "score", "--steps", "1500")
    e, f = s["exact_posterior"], s["fitted"]
    assert abs(f["mean"] - e["mean"]) < 0.02
    assert abs(f["std"] - e["std"]) < 0.02


@pytest.mark.parametrize("guide, key", [("map", "map"), ("mle", "mle")])
def test_point_estimates(tmp_path, guide, key):
    s = fit_coin(tmp_path, "--guide", guide, "--steps", "1500")
    assert s["fitted"]["pi_hat"] == pytest.approx(s["predictive_exact"][key], abs=0.005)


def test_point_estimates_are_overconfident_with_little_data(tmp_path):
    """Three heads in a row: MLE says P(heads) = 1, full Bayes (a = b = 1) says 4/5."""
    s = fit_coin(tmp_path, "--heads", "3", "--tails", "0", "--prior-a", "1", "--prior-b", "1")
    p = s["predictive_exact"]
    assert p["mle"] == 1.0 and p["bayes"] == pytest.approx(0.8)
    assert s["fitted"]["predictive"] == pytest.approx(0.8, abs=0.02)


def test_data_sources(tmp_path, capsys):
    (tmp_path / "flips.csv").write_text("1\n0\n1\n1\n")
    out = tmp_path / "r"
    for source in (
        ["--flips", "1,0,1,1"],
        ["--data", str(tmp_path / "flips.csv")],
        ["--simulate", "0.7", "--n", "4"],
    ):
        assert (
            cli.main(
                [
                    "fit",
                    "coin",
                    *source,
                    "--steps",
                    "10",
                    "--quiet",
                    "--overwrite",
                    "--out",
                    str(out),
                ]
            )
            == 0
        )
        s = json.loads((out / "summary.json").read_text())
        assert s["data"]["heads"] + s["data"]["tails"] == 4
        if "--simulate" not in source:
            assert s["data"] == {"heads": 3, "tails": 1}


def test_predict_new_flips(tmp_path, capsys):
    s = fit_coin(tmp_path)
    (tmp_path / "new.csv").write_text("1\n1\n0\n")
    out = tmp_path / "p.json"
    assert (
        cli.main(
            [
                "predict",
                str(tmp_path / "run"),
                "--input",
                str(tmp_path / "new.csv"),
                "--output",
                str(out),
            ]
        )
        == 0
    )
    p = json.loads(out.read_text())
    assert p["heads"] == 2 and p["flips"] == 3
    assert p["p_next_heads"] == pytest.approx(s["predictive_exact"]["bayes"], abs=0.01)
    # q is close to the exact posterior, so the predictive of the sequence is too
    assert p["log_predictive_fitted"] == pytest.approx(p["log_predictive_exact"], abs=0.02)
