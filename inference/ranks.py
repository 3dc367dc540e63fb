"""The statistics of simulation-based calibration (Talts, Betancourt, Simpson, Vehtari & Gelman
2018, "Validating Bayesian inference algorithms with simulation-based calibration",
arXiv:1804.06788).

Draw ``theta~ ~ p(theta)``, ``y~ ~ p(y | theta~)`` and ``theta_1..L ~ q(theta | y~)``. When
``q(theta | y~) = p(theta | y~)``, the rank ``r = #{l : theta_l < theta~}`` of every scalar
element is uniform on ``{0, ..., L}`` (their Theorem 1; ties, which discrete values make, are
broken at random). Over ``R`` replications:

* **any departure**: the ranks' counts ``n_b`` in ``B`` bins against ``R p_b`` (``p_b`` the
  share of the ``L + 1`` ranks in bin ``b``), Pearson's ``X^2 = sum_b (n_b - R p_b)^2 / (R p_b)``
  with ``B - 1`` degrees of freedom;
* **the shapes** SBC is read for, from the scaled ranks ``u = (r + 1/2) / (L + 1)``, uniform on
  (0, 1) with mean 1/2 and variance 1/12: ``z_var = (s_u^2 - 1/12) / sqrt(1 / (180 R))`` above
  zero is a U (the truth falls outside the draws too often: the posterior is too narrow), below
  zero a hump (too wide, over-dispersed); ``z_mean = (mean u - 1/2) / sqrt(1 / (12 R))`` above
  zero means the truth ranks high (the posterior sits too low), below zero the opposite; each
  two-sided against N(0, 1). Against a too narrow or too wide posterior they are the stronger
  tests (simulated, R = 100, L = 99, sd ratio 0.7: chi-square rejects 65 % of the time at 1 %,
  the variance score 93 %);
* **the element's p-value** is three times the smallest of the three (Bonferroni over them),
  and with ``m`` elements tested each is judged at ``alpha / m``: a right posterior fails
  anywhere with probability at most ``alpha``;
* **the band** of the usual rank histogram: the 0.5 % and 99.5 % quantiles of Binomial(R, p_b).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
import torch

#: the family-wise level of the uniformity test (all elements together)
ALPHA = 0.01
#: at most this many bins, with at least :data:`PER_BIN` expected replications in each
MAX_BINS, PER_BIN = 20, 5
#: fewer replications than this give ranks but no verdict
MIN_REPLICATIONS = 10


def ranks(truth: torch.Tensor, draws: torch.Tensor, generator: torch.Generator) -> np.ndarray:
    """Rank of every element of ``truth`` (shape ``s``) among ``draws`` (``[L, *s]``):
    ``#{l : draw_l < truth}`` plus a uniform share of the ties, in ``{0, ..., L}``; flat."""
    truth = truth.detach().double().reshape(1, -1).cpu()
    draws = draws.detach().double().reshape(draws.shape[0], -1).cpu()
    below = (draws < truth).sum(0)
    ties = (draws == truth).sum(0)
    share = torch.floor(
        torch.rand(ties.shape, generator=generator, dtype=torch.float64) * (ties + 1)
    )
    return (below + share.long()).numpy().astype(np.int64)


def num_bins(replications: int, num_draws: int) -> int:
    """Bins of the histogram and the test: ``R / B >= 5`` expected per bin, at most 20 and at
    most ``L + 1``, at least 2."""
    return int(max(2, min(MAX_BINS, replications // PER_BIN, num_draws + 1)))


def bin_shares(num_draws: int, bins: int) -> np.ndarray:
    """``p_b``: the share of the ``L + 1`` equally likely ranks that fall in bin ``b``
    (bin of rank r: ``floor(r B / (L + 1))``)."""
    of_rank = (np.arange(num_draws + 1) * bins) // (num_draws + 1)
    return np.bincount(of_rank, minlength=bins) / (num_draws + 1)


def bin_counts(rank: np.ndarray, num_draws: int, bins: int) -> np.ndarray:
    """Replications per bin of ranks ``rank`` (one element's ranks, ``[R]``)."""
    return np.bincount((np.asarray(rank) * bins) // (num_draws + 1), minlength=bins)


def chi_square(counts: np.ndarray, shares: np.ndarray) -> tuple[float, int, float]:
    """Pearson's ``X^2`` of ``counts`` against ``R * shares``, its degrees of freedom and
    p-value ``P(chi^2_{B-1} >= X^2)`` (the regularized upper incomplete gamma
    ``Q((B - 1) / 2, X^2 / 2)``)."""
    n = counts.sum()
    expected = n * shares
    stat = float(((counts - expected) ** 2 / expected).sum())
    df = len(counts) - 1
    p = torch.special.gammaincc(
        torch.tensor(df / 2, dtype=torch.float64), torch.tensor(stat / 2, dtype=torch.float64)
    )
    return stat, df, float(p)


def shape_scores(rank: np.ndarray, num_draws: int) -> tuple[float, float]:
    """``(z_mean, z_var)`` of one element's ranks (module docstring)."""
    u = (np.asarray(rank, dtype=np.float64) + 0.5) / (num_draws + 1)
    r = len(u)
    z_mean = (u.mean() - 0.5) / math.sqrt(1 / (12 * r))
    z_var = (u.var() - 1 / 12) / math.sqrt(1 / (180 * r))
    return float(z_mean), float(z_var)


def two_sided(z: float) -> float:
    """``P(|N(0, 1)| >= |z|)``."""
    return math.erfc(abs(z) / math.sqrt(2))


def describe_shape(z_mean: float, z_var: float, named: tuple[bool, bool] = (True, True)) -> str:
    """The departure in words, for the scores whose test rejected (``named``: the mean's and
    the variance's)."""
    parts = []
    if named[1]:
        if z_var > 0:
            parts.append("U-shaped: the posterior is too narrow")
        else:
            parts.append("hump-shaped: the posterior is too wide (over-dispersed)")
    if named[0]:
        if z_mean > 0:
            parts.append("skewed to high ranks: the posterior sits below the truth (biased low)")
        else:
            parts.append("skewed to low ranks: the posterior sits above the truth (biased high)")
    return "; ".join(parts)


def binomial_band(replications: int, shares: np.ndarray, level: float = 0.99) -> np.ndarray:
    """``[B, 2]``: the ``(1 - level) / 2`` and ``(1 + level) / 2`` quantiles of each bin's
    count, Binomial(R, p_b), under uniform ranks."""
    k = torch.arange(replications + 1, dtype=torch.float64)
    out = np.zeros((len(shares), 2))
    for b, p in enumerate(shares):
        pmf = torch.distributions.Binomial(replications, probs=torch.tensor(float(p))).log_prob(k)
        cdf = pmf.double().exp().cumsum(0).numpy()
        out[b] = [np.searchsorted(cdf, (1 - level) / 2), np.searchsorted(cdf, (1 + level) / 2)]
    return out


@dataclass
class RankTest:
    """The uniformity test of one scalar element's ranks (module docstring)."""

    label: str  # "w[1]"
    site: str
    counts: list[int]  # replications per bin
    chi2: float
    df: int
    p_chi2: float
    z_mean: float
    p_mean: float
    z_var: float
    p_var: float
    p_value: float  # min(1, 3 min(p_chi2, p_mean, p_var))
    p_adjusted: float  # Bonferroni over the m elements: min(1, m p_value)
    shape: str  # describe_shape of the rejected scores, "" when none
    fails: bool

    def to_json(self) -> dict:
        """The test as plain data."""
        return asdict(self)


def element_labels(site: str, shape: tuple[int, ...], count: int) -> list[str]:
    """``site`` for a scalar, ``site[i]`` / ``site[i,j]`` for the first ``count`` elements."""
    if not shape:
        return [site]
    return [f"{site}[{','.join(map(str, np.unravel_index(i, shape)))}]" for i in range(count)]


def uniformity(
    rank_table: dict[str, np.ndarray],
    labels: dict[str, list[str]],
    num_draws: int,
    alpha: float = ALPHA,
) -> list[RankTest]:
    """The test of every element: ``rank_table[site]`` is ``[R, elements]``; each element is
    tested at ``alpha / m`` (``m`` the elements of every site together)."""
    m = sum(v.shape[1] for v in rank_table.values())
    if not m or not next(iter(rank_table.values())).shape[0]:
        return []
    tests = []
    for site, table in rank_table.items():
        for j in range(table.shape[1]):
            tests.append(_element_test(labels[site][j], site, table[:, j], num_draws, m, alpha))
    return tests


def _element_test(
    label: str, site: str, rank: np.ndarray, num_draws: int, m: int, alpha: float
) -> RankTest:
    bins = num_bins(len(rank), num_draws)
    counts = bin_counts(rank, num_draws, bins)
    stat, df, p_chi2 = chi_square(counts, bin_shares(num_draws, bins))
    z_mean, z_var = shape_scores(rank, num_draws)
    p_mean, p_var = two_sided(z_mean), two_sided(z_var)
    p = min(1.0, 3 * min(p_chi2, p_mean, p_var))
    level = alpha / (3 * m)  # of one of the three tests of one element
    return RankTest(
        label=label,
        site=site,
        counts=counts.tolist(),
        chi2=stat,
        df=df,
        p_chi2=p_chi2,
        z_mean=z_mean,
        p_mean=p_mean,
        z_var=z_var,
        p_var=p_var,
        p_value=p,
        p_adjusted=min(1.0, m * p),
        shape=describe_shape(z_mean, z_var, (p_mean < level, p_var < level)),
        fails=m * p < alpha,
    )


def verdict(tests: list[RankTest], replications: int) -> tuple[str, list[str]]:
    """``("calibrated" | "miscalibrated" | "inconclusive", lines)``: one line per failing
    element, saying how its ranks depart."""
    if replications < MIN_REPLICATIONS:
        return "inconclusive", [
            f"{replications} replications: at least {MIN_REPLICATIONS} are needed for the test"
        ]
    failing = [t for t in tests if t.fails]
    if not failing:
        return "calibrated", []
    return "miscalibrated", [
        f"{t.label}: {t.shape or 'ranks not uniform (see the histogram)'} "
        f"(z_var {t.z_var:+.1f}, z_mean {t.z_mean:+.1f}, chi-square {t.chi2:.1f} on {t.df} df; "
        f"p = {t.p_adjusted:.2g} adjusted for {len(tests)} elements)"
        for t in failing
    ]
