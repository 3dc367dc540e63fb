"""The statistics of simulation-based calibration (:mod:`bayesdl.inference.ranks`), on ranks
simulated in closed form: Theorem 1 of Talts et al. (2018) makes the rank of a draw of the
posterior among L draws of the posterior uniform on {0..L}; a posterior of another width or
place makes it U-shaped, hump-shaped or skewed."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import stats as scipy_stats

from bayesdl.inference import ranks as r

L = 99


def _ranks(rng, n: int, sd: float = 1.0, shift: float = 0.0, elements: int = 1) -> np.ndarray:
    """Ranks of truths ~ N(0, 1) among L draws of N(shift, sd^2), ``[n, elements]``."""
    gen = torch.Generator().manual_seed(int(rng.integers(2**31)))
    truth = torch.from_numpy(rng.standard_normal((n, elements)))
    draws = torch.from_numpy(shift + sd * rng.standard_normal((n, L, elements)))
    return np.stack([r.ranks(truth[i], draws[i], gen) for i in range(n)])


def test_chi_square_p_value_is_the_chi2_survival_function():
    counts = np.array([12, 3, 9, 6, 10])
    shares = r.bin_shares(L, 5)
    stat, df, p = r.chi_square(counts, shares)
    expected = counts.sum() * shares
    assert stat == pytest.approx(((counts - expected) ** 2 / expected).sum())
    assert df == 4 and p == pytest.approx(scipy_stats.chi2.sf(stat, 4), rel=1e-10)


def test_bins_cover_every_rank_once():
    """Shares sum to 1 and match the count of ranks per bin, also when B does not divide
    L + 1 (L = 99, B = 6: bins of 16 or 17 ranks)."""
    for bins in (2, 4, 6, 20):
        shares = r.bin_shares(L, bins)
        assert shares.sum() == pytest.approx(1.0)
        counts = r.bin_counts(np.arange(L + 1), L, bins)
        np.testing.assert_allclose(counts / (L + 1), shares)


def test_right_posterior_passes_at_its_level():
    """Uniform ranks (draws from the truth's own distribution): of 300 sets of R = 50
    replications of 2 elements, at most 3 % fail at alpha = 1 % (the level, 1 %, plus 3
    binomial sds of 300 trials)."""
    rng = np.random.default_rng(0)
    failures = 0
    for _ in range(300):
        table = _ranks(rng, 50, elements=2)
        tests = r.uniformity({"w": table}, {"w": ["w[0]", "w[1]"]}, L)
        failures += any(t.fails for t in tests)
    assert failures / 300 <= 0.01 + 3 * math.sqrt(0.01 * 0.99 / 300)


@pytest.mark.parametrize(
    "sd, shift, words",
    [
        (0.5, 0.0, "U-shaped: the posterior is too narrow"),
        (2.0, 0.0, "hump-shaped: the posterior is too wide"),
        (1.0, 0.8, "skewed to low ranks: the posterior sits above the truth"),
        (1.0, -0.8, "skewed to high ranks: the posterior sits below the truth"),
    ],
)
def test_wrong_posteriors_fail_with_their_shape(sd, shift, words):
    rng = np.random.default_rng(1)
    table = _ranks(rng, 100, sd=sd, shift=shift)
    (test,) = r.uniformity({"theta": table}, {"theta": ["theta"]}, L)
    assert test.fails and words in test.shape
    verdict, lines = r.verdict([test], 100)
    assert verdict == "miscalibrated" and words in lines[0]


def test_ties_are_broken_uniformly():
    """A discrete truth equal to every draw: its rank is uniform on 0..L, not always 0."""
    gen = torch.Generator().manual_seed(0)
    ranks = np.concatenate([r.ranks(torch.ones(1), torch.ones(L, 1), gen) for _ in range(4000)])
    assert ranks.min() == 0 and ranks.max() == L
    assert ranks.mean() == pytest.approx(L / 2, abs=4 * math.sqrt((L + 1) ** 2 / 12 / 4000))


def test_binomial_band_holds_99_percent_of_uniform_counts():
    shares = r.bin_shares(L, 6)
    band = r.binomial_band(30, shares)
    for (lo, hi), p in zip(band, shares, strict=True):
        inside = scipy_stats.binom.cdf(hi, 30, p) - scipy_stats.binom.cdf(lo - 1, 30, p)
        assert inside >= 0.99 and lo <= 30 * p <= hi


def test_too_few_replications_give_no_verdict():
    rng = np.random.default_rng(2)
    tests = r.uniformity({"w": _ranks(rng, 5)}, {"w": ["w"]}, L)
    assert r.verdict(tests, 5)[0] == "inconclusive"
