"""Observed against expected positives: calibration-in-the-large, at any base rate.

A calibrated model's scores p_i are the probabilities of its outcomes, so the count of
positives O (binary; correct top labels for multiclass) is Poisson-binomial with mean
E = sum p_i. O / E is the effect (1 when calibrated; 0.5 when the scores are twice too
high), and the two-sided p-value of O under that distribution is the evidence. Unlike ECE,
which for a 2% base rate stays below about 0.02 whatever the miscalibration, O / E does not
shrink with the base rate.

The tails are Lugannani-Rice saddlepoint approximations with Daniels' second continuity
correction for a lattice variable (Daniels 1987, "Tail probability approximations"; Butler
2007, 1.2.4): cost O(groups), not O(rows), at any n. Their accuracy against the exact
distribution (a brute-force convolution) is held by tests: relative error under 3% for
tails down to 1e-12, largest (about 2%) where the expected count is a few units
(tests/monitoring/test_monitoring_expected.py); the end points P(S = 0) and P(S = n) are
computed exactly. Rows are given grouped:
``counts[j]`` rows sharing the probability ``probs[j]``. Where only a group's mean score is
known (a fine calibration slot, or a cohort's sum of scores) the binomial with that mean is
used; it is the more spread (Hoeffding 1956: larger in the convex order, its tails above
the Poisson-binomial's beyond one count of the mean), so the grouping errs toward fewer
flags.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import optimize, stats

from app.monitoring._result import JsonResult

_T_BOUND = 60.0  # |logit| beyond which a group is certain (p within 1e-26 of 0 or 1)


@dataclass(frozen=True)
class ObservedExpected(JsonResult):
    """Observed (``observed``) against expected (``expected``) positives of ``n`` rows: the
    ratio O / E (None when E is 0), the two one-sided tail probabilities P(S <= O) and
    P(S >= O) under calibration, and the two-sided p-value (twice the smaller, at most 1)."""

    n: int
    observed: int
    expected: float
    ratio: float | None
    p_lower: float
    p_upper: float
    pvalue: float


def _groups(counts: Any, probs: Any) -> tuple[np.ndarray, np.ndarray, int]:
    """(counts, logits) of the uncertain groups, and the rows certain to be positive."""
    c = np.asarray(counts, dtype=np.float64).reshape(-1)
    p = np.clip(np.asarray(probs, dtype=np.float64).reshape(-1), 0.0, 1.0)
    if c.shape != p.shape:
        raise ValueError("counts and probs must have equal length")
    if np.any(c < 0) or not np.all(np.isfinite(p)):
        raise ValueError("counts must be >= 0 and probabilities finite")
    with np.errstate(divide="ignore"):
        logit = np.log(p) - np.log1p(-p)
    sure = logit >= _T_BOUND
    keep = (c > 0) & (logit > -_T_BOUND) & ~sure
    return c[keep], logit[keep], int(round(float(c[sure].sum())))


def _upper(c: np.ndarray, logit: np.ndarray, k: int) -> float:
    """P(S >= k) for S the sum of Bernoulli(expit(logit_j)) over c_j rows per group."""
    n = int(round(float(c.sum())))
    if k <= 0:
        return 1.0
    if k > n:
        return 0.0
    if k == n:  # the lattice's end, where the saddlepoint is least accurate: exact
        return math.exp(-float(np.sum(c * np.logaddexp(0.0, -logit))))
    x = k - 0.5

    def slope(t: float) -> float:  # K'(t) - x
        return float(np.sum(c * _expit(logit + t))) - x

    mean = slope(0.0) + x
    var = float(np.sum(c * _expit(logit) * _expit(-logit)))
    if abs(x - mean) < 1e-3 * math.sqrt(max(var, 1e-12)):
        return float(stats.norm.sf((x - mean) / math.sqrt(var)))
    span = float(np.max(np.abs(logit))) + 2 * _T_BOUND
    t = optimize.brentq(slope, -span, span, xtol=1e-14, rtol=1e-14, maxiter=500)
    cgf = float(np.sum(c * (np.logaddexp(0.0, logit + t) - np.logaddexp(0.0, logit))))
    k2 = float(np.sum(c * _expit(logit + t) * _expit(-logit - t)))
    w = math.copysign(math.sqrt(max(2.0 * (t * x - cgf), 0.0)), t)
    u = 2.0 * math.sinh(t / 2.0) * math.sqrt(k2)
    if w == 0.0 or u == 0.0:
        return float(stats.norm.sf((x - mean) / math.sqrt(var)))
    out = float(stats.norm.sf(w)) + float(stats.norm.pdf(w)) * (1.0 / u - 1.0 / w)
    return min(max(out, 0.0), 1.0)


def _expit(x: np.ndarray | float) -> Any:
    return 0.5 * (1.0 + np.tanh(0.5 * np.asarray(x)))


def poisson_binomial_tails(counts: Any, probs: Any, k: int) -> tuple[float, float]:
    """(P(S <= k), P(S >= k)) for S the number of positives among independent rows,
    ``counts[j]`` of them with probability ``probs[j]`` (saddlepoint, module docstring).
    Rows with probability 0 or 1 are certain and only shift S."""
    c, logit, sure = _groups(counts, probs)
    n = int(round(float(c.sum())))
    kk = int(k) - sure
    upper = _upper(c, logit, kk)
    lower = _upper(c, -logit, n - kk)  # S <= k is (rows - S) >= rows - k
    return lower, upper


def observed_expected(counts: Any, probs: Any, observed: int) -> ObservedExpected:
    """O (``observed`` positives) against E = sum counts x probs, with the Poisson-binomial
    tails of O under calibration. Groups may be rows (counts of 1) or rows sharing a mean
    score (the binomial with that mean, conservative: module docstring)."""
    c = np.asarray(counts, dtype=np.float64).reshape(-1)
    p = np.clip(np.asarray(probs, dtype=np.float64).reshape(-1), 0.0, 1.0)
    n = int(round(float(c.sum())))
    if not 0 <= observed <= n:
        raise ValueError("need 0 <= observed <= n")
    expected = float(np.sum(c * p))
    lower, upper = poisson_binomial_tails(c, p, int(observed))
    ratio = observed / expected if expected > 0 else None
    return ObservedExpected(n, int(observed), expected, ratio, lower, upper,
                            min(1.0, 2.0 * min(lower, upper)))

