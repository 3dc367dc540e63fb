"""The tour's lecture-claim sections: their closed forms, their fits, their HTML."""

from __future__ import annotations

import base64
import math
import re

import numpy as np
import pyro.distributions as dist
import pytest
import torch

import bayesdl.models.coin as coin
import bayesdl.models.linear_regression as linreg
from bayesdl.reports import lecture_math as lm
from bayesdl.reports import tour_lecture

F64 = torch.float64


@pytest.fixture(scope="module")
def tour(tmp_path_factory):
    """All five sections once, with quick settings: their HTML and their recorded numbers."""
    record: dict = {}
    out = tmp_path_factory.mktemp("tour")
    parts = tour_lecture.sections(out, quick=True, record=record)
    return parts, record, out


# -- 3. sequential updating --------------------------------------------------------------------


def test_sequential_beta_equals_batch_posterior_exactly():
    batches = [(3, 7), (0, 5), (12, 1), (4, 4)]
    steps = lm.beta_sequential(2.0, 3.0, batches)
    h, t = sum(b[0] for b in batches), sum(b[1] for b in batches)
    assert steps[-1] == coin.posterior(2.0, 3.0, h, t)  # exact: the parameters add up
    assert steps[0] == (5.0, 10.0)


def test_sequential_fits_match_the_batch_posterior(tour):
    # the Beta guide holds the exact posterior, so only SVI noise is left; four fits in a row
    # (150 steps each, each started at its prior) must land within 0.2 posterior sd of the
    # all-at-once posterior's mean and within 10 % of its sd (bayesdl compare flags 0.3 sd and
    # a ratio outside [0.7, 1.3])
    seq = tour[1]["sequential"]
    assert tuple(seq["exact"][-1]) == tuple(seq["at_once"])
    assert seq["mean_shift_sd"] < 0.2
    assert 0.9 < seq["sd_ratio"] < 1.1
    a, b = seq["fitted"][-1]
    assert lm.coin_kl_to_posterior(1.0, 1.0, *_counts(seq["at_once"]), a, b) < 0.01


def _counts(post_ab):
    return int(post_ab[0] - 1), int(post_ab[1] - 1)


# -- 4. the posterior collapses at the 1/sqrt(N) rate ------------------------------------------


def test_posterior_sd_shrinks_at_the_root_n_rate():
    rng = np.random.default_rng(0)
    ns = np.array([100, 1000, 10_000, 100_000])
    flips = rng.random(ns.max()) < 0.3
    heads = np.cumsum(flips)
    coin_sd = [lm.beta_mean_sd(1 + heads[n - 1], 1 + n - heads[n - 1])[1] for n in ns]
    assert abs(lm.loglog_slope(ns, coin_sd) + 0.5) < 0.02
    # sd sqrt(N) -> sqrt(pi_hat (1 - pi_hat)): the Beta(1 + h, 1 + t) sd is sqrt(p(1-p)/(N+3))
    p_hat = heads[-1] / ns[-1]
    assert coin_sd[-1] * math.sqrt(ns[-1]) == pytest.approx(math.sqrt(p_hat * (1 - p_hat)), 1e-3)
    x, y = tour_lecture._linreg_data(int(ns.max()), seed=1)
    lin_sd = [tour_lecture.linreg_sd(x[:n], y[:n]) for n in ns]
    assert abs(lm.loglog_slope(ns, lin_sd) + 0.5) < 0.02
    # sigma / sqrt(N Var x) with Var U(-3, 3) = 3: within sampling error of X^T X / N
    assert lin_sd[-1] * math.sqrt(3 * ns[-1]) == pytest.approx(1.0, rel=0.02)


def test_collapse_section_numbers(tour):
    rec = tour[1]["collapse"]
    assert abs(rec["coin_slope"] + 0.5) < 0.05 and abs(rec["linreg_slope"] + 0.5) < 0.05
    for _, _, _, _, lin_exact, lin_fitted, _ in rec["fits"]:
        assert lin_fitted == pytest.approx(lin_exact, rel=0.15)
    # exact expected log loss over datasets: Bayes beats MAP at every N, both -> 1/(2N)
    for n, bayes, map_, p_inf, _, rate in rec["log_loss"]:
        assert 0 < bayes <= map_ and 0 <= p_inf <= 1
        if n >= 200:
            assert bayes == pytest.approx(rate, rel=0.05)


def test_expected_log_loss_is_exact_over_datasets():
    # n = 1: the Bayes predictive (a + h) / (a + b + 1) takes two values
    pi, a, b = 0.3, 1.0, 1.0
    loss, p_inf = lm.coin_expected_log_loss(pi, 1, lm.coin_predictors(a, b)["Bayes"])
    ell = lambda p: -(pi * math.log(p) + (1 - pi) * math.log(1 - p))  # noqa: E731
    assert p_inf == 0 and loss == pytest.approx(pi * ell(2 / 3) + (1 - pi) * ell(1 / 3), 1e-12)
    _, p_inf = lm.coin_expected_log_loss(pi, 10, coin.mle_estimate)
    assert p_inf == pytest.approx(0.7**10 + 0.3**10, 1e-12)  # no heads, or no tails


# -- 6. KL = log p(D) - ELBO -------------------------------------------------------------------


def test_kl_identity_coin_closed_form_and_monte_carlo():
    h, t, a0, b0 = 7, 13, 1.0, 1.0
    log_p = coin.log_evidence(a0, b0, h, t)
    data = {
        "flips": torch.cat([torch.ones(h, dtype=F64), torch.zeros(t, dtype=F64)]),
        "prior_a": a0,
        "prior_b": b0,
        "mle": False,
    }
    for a_q, b_q in ((8.0, 14.0), (6.5, 15.0), (80.0, 140.0), (14.0, 8.0), (1.0, 1.0)):
        kl = lm.coin_kl_to_posterior(a0, b0, h, t, a_q, b_q)
        assert log_p - lm.coin_elbo(a0, b0, h, t, a_q, b_q) == pytest.approx(kl, abs=1e-10)
        q = dist.Beta(torch.tensor(a_q, dtype=F64), torch.tensor(b_q, dtype=F64))
        mean, se = lm.mc_elbo(coin.model, lm.fixed_guide("pi", q), data, 1000, 20)
        assert abs(log_p - mean - kl) <= 4 * se + 1e-9, (a_q, b_q, log_p - mean, kl, se)


def test_kl_identity_linreg_closed_form_and_monte_carlo():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(40, 3, generator=g, dtype=F64)
    x[:, 1] += 0.9 * x[:, 0]  # correlated inputs: the mean-field optimum is not exact
    y = x @ torch.tensor([0.5, -1.0, 0.2], dtype=F64) + 0.5 * torch.randn(40, generator=g)
    kw = {"prior_loc": 0.0, "prior_scale": 1.0, "noise_scale": 0.5}
    mu, cov = linreg.posterior(x, y, **kw)
    log_p = lm.linreg_log_evidence(x, y, **kw)
    guides = [
        (mu, cov),
        (mu, torch.diag(linreg.mean_field_optimum_variance(cov))),
        (mu + 0.1, 2 * cov),
        (torch.zeros(3, dtype=F64), torch.eye(3, dtype=F64)),
    ]
    for m, s in guides:
        kl = lm.linreg_kl_to_posterior(m, s, mu, cov)
        elbo = lm.linreg_elbo(x, y, m, s, **kw)
        assert log_p - elbo == pytest.approx(kl, abs=1e-8)
        q = dist.MultivariateNormal(m, s)
        mean, se = lm.mc_elbo(linreg.model, lm.fixed_guide("theta", q), {"x": x, "y": y, **kw})
        assert abs(log_p - mean - kl) <= 4 * se + 1e-9, (log_p - mean, kl, se)
    assert lm.linreg_kl_to_posterior(*guides[1], mu, cov) > 0.05  # mean field pays for it


def test_elbo_section_adds_up(tour):
    rec = tour[1]["elbo_kl"]
    for rows in (rec["coin"], rec["linreg"]):
        for _, log_p, closed, _, kl, gap_closed, _, z in rows:
            assert gap_closed == pytest.approx(kl, abs=1e-6) == log_p - closed
            assert abs(z) < 4
        assert rows[0][4] == 0.0  # the exact posterior: KL 0


# -- the HTML ----------------------------------------------------------------------------------

TABLE = re.compile(r"<table>.*?</table>", re.S)
IMG = re.compile(r'<img alt="([^"]+)" src="data:image/png;base64,([^"]+)"[^>]*>')


def test_each_section_has_its_figure_and_table(tour):
    parts = tour[0]
    assert len(parts) == 5
    for part, name in zip(parts, tour_lecture.FIGURES, strict=True):
        images = IMG.findall(part)
        assert [alt for alt, _ in images] == [name]
        png = base64.b64decode(images[0][1], validate=True)
        assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 1000
        assert TABLE.search(part) and "<td>" in part
        assert "(lecture)</blockquote>" in part


def test_data_per_parameter_and_ensemble_numbers(tour):
    rec = tour[1]
    for row in rec["data_per_parameter"]:
        assert all(0 <= acc <= 1 for acc in row[2:5]) and all(nll > 0 for nll in row[5:8])
    stats = rec["ensemble"]["stats"]
    assert set(stats) == set(tour_lecture.ENSEMBLE_SIZES)
    assert all(0 <= s[0] <= 1 and s[2] > 0 and s[4] > 0 for s in stats.values())


def test_refuses_an_existing_tour_folder(tour, tmp_path):
    from bayesdl.inference.errors import UserError

    with pytest.raises(UserError, match="already holds a run"):
        tour_lecture.refuse_existing(tour[2])
    tour_lecture.refuse_existing(tmp_path)  # an empty folder is fine
    (tmp_path / "lecture").mkdir()
    (tmp_path / "lecture" / "sequential.png").write_bytes(b"x")
    with pytest.raises(UserError, match="overwrite"):
        tour_lecture.refuse_existing(tmp_path)
