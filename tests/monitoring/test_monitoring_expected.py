"""Observed against expected positives: the saddlepoint tails held to the exact distribution
(a brute-force convolution of the rows), scipy's binomial, and hand cases."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from app.monitoring.expected import observed_expected, poisson_binomial_tails

# the relative accuracy the module docstring states for tails down to 1e-12
REL = 0.03


def brute_force_pmf(probs: np.ndarray) -> np.ndarray:
    """The exact distribution of the count of positives, one row at a time."""
    pmf = np.ones(1)
    for p in probs:
        pmf = np.convolve(pmf, [1.0 - p, p])
    return pmf


def _rows(seed: int, n: int, kind: str) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if kind == "rare":
        return rng.beta(0.5, 25.0, size=n)  # mean about 0.02
    if kind == "spread":
        return rng.uniform(size=n)
    return np.where(rng.uniform(size=n) < 0.5, 0.01, 0.9)  # two far apart


@pytest.mark.parametrize(("seed", "n", "kind"), [(1, 50, "rare"), (2, 400, "rare"),
                                                 (3, 2000, "rare"), (4, 300, "spread"),
                                                 (5, 1000, "two")])
def test_tails_match_a_brute_force_convolution(seed: int, n: int, kind: str) -> None:
    p = _rows(seed, n, kind)
    pmf = brute_force_pmf(p)
    lower_exact, upper_exact = np.cumsum(pmf), np.cumsum(pmf[::-1])[::-1]
    worst = 0.0
    for k in range(0, n + 1, max(1, n // 250)):  # every count, or 250 across
        lo, up = poisson_binomial_tails(np.ones(n), p, k)
        for got, want in ((lo, lower_exact[k]), (up, upper_exact[k])):
            if want >= 1e-12:
                worst = max(worst, abs(got - want) / want)
            else:  # far tails: tiny as well
                assert got < 1e-10
    assert worst < REL, worst


def test_one_group_is_the_binomial() -> None:
    n, p = 10_000, 0.04
    for k in (200, 330, 400, 470, 600):
        lo, up = poisson_binomial_tails([n], [p], k)
        assert lo == pytest.approx(stats.binom.cdf(k, n, p), rel=REL)
        assert up == pytest.approx(stats.binom.sf(k - 1, n, p), rel=REL)


def test_rare_event_scores_twice_too_high() -> None:
    # 10,000 predictions whose scores expect 400 positives; 200 occur
    r = observed_expected([10_000], [0.04], 200)
    assert r.expected == pytest.approx(400.0)
    assert r.ratio == pytest.approx(0.5)
    assert r.pvalue < 1e-25
    assert r.pvalue == pytest.approx(2 * stats.binom.cdf(200, 10_000, 0.04), rel=REL)


def test_hand_cases() -> None:
    # two rows at 0.5: P(S = 0) = 1/4, P(S >= 1) = 3/4, P(S = 2) = 1/4
    lo, up = poisson_binomial_tails([2], [0.5], 0)
    assert lo == pytest.approx(0.25, rel=REL) and up == 1.0
    lo, up = poisson_binomial_tails([2], [0.5], 2)
    assert lo == 1.0 and up == pytest.approx(0.25, rel=REL)
    # certain rows only shift the count: 3 sure positives and 0 sure negatives
    lo, up = poisson_binomial_tails([3, 5, 2], [1.0, 0.0, 0.5], 3)
    assert lo == pytest.approx(0.25, rel=REL) and up == 1.0
    lo, up = poisson_binomial_tails([3, 2], [1.0, 0.5], 2)  # fewer than the sure ones
    assert lo == 0.0 and up == 1.0
    r = observed_expected([100], [0.0], 0)
    assert r.ratio is None and r.pvalue == 1.0


def test_calibrated_counts_are_not_evidence() -> None:
    r = observed_expected([1000], [0.02], 20)
    assert r.ratio == pytest.approx(1.0) and r.pvalue == pytest.approx(1.0)
    # rare, few rows: 8 positives where 2 are expected is not alarming at 1e-3 exactly
    r = observed_expected([100], [0.02], 8)
    assert r.pvalue == pytest.approx(2 * stats.binom.sf(7, 100, 0.02), rel=REL)
    assert r.pvalue > 1e-3


def test_bad_input_is_refused() -> None:
    with pytest.raises(ValueError):
        observed_expected([10], [0.5], 11)
    with pytest.raises(ValueError):
        observed_expected([10, 1], [0.5], 1)
