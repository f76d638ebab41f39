"""Statistical gates: how large a statistic can get from sampling noise alone, at a window's n.

A decision needs both an effect above its line and evidence that the effect is not noise.
These functions give the noise side: the quantile a statistic stays under, with probability
1 - alpha, when nothing changed, and the smallest n at which an effect line can be told
apart from that noise at all (below it a window is ``insufficient_data``). Definitions and
the reasoning behind each noise model: docs/metrics.md, "Decisions".
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np
import scipy
from scipy import stats

from app.monitoring._memo import Memo, Shared, digest
from app.monitoring._result import JsonResult

ECE_NULL_DRAWS = 20_000
ECE_NULL_SEED = 20_260_115
ECE_NULL_MEMO = Memo(1024)  # seeded, so a function of its inputs: computed once per window
# scipy's kstwo.isf sums an O(n) series inside a root search (~0.1-0.5 s a call at a window's
# n): shared between the service and the scheduler where the caller opens a store
KS_NOISE_MEMO = Memo(4096, Shared(f"ks_noise_quantile/scipy-{scipy.__version__}/1",
                                  lambda q: float(q).hex(), float.fromhex))


@lru_cache(maxsize=4096)
def _chi2_isf(p: float, df: int) -> float:
    return float(stats.chi2.isf(p, df))


def _family_alpha(alpha: float, m: int) -> float:
    if not 0 < alpha < 1:
        raise ValueError("alpha must lie in (0, 1)")
    return alpha / max(int(m), 1)


def psi_noise_quantile(n_cur: int, n_ref: int, n_bins: int, alpha: float, m: int = 1) -> float:
    """The 1 - alpha/m quantile of PSI between two samples of one distribution:
    chi2(B - 1, 1 - alpha/m) x (1/n_cur + 1/n_ref).

    To second order PSI is the symmetric chi-square distance sum (a - e)^2 / e, and for two
    independent multinomial samples of sizes n and n_ref over B bins that distance divided by
    (1/n + 1/n_ref) is asymptotically chi-square with B - 1 degrees of freedom. ``n_bins`` is
    the number of bins the reference populates (bins empty in the reference carry no noise);
    ``m`` the number of columns tested in the window (Bonferroni).
    """
    if n_cur <= 0 or n_ref <= 0:
        raise ValueError("sample sizes must be positive")
    if n_bins <= 1:
        return 0.0
    q = _chi2_isf(_family_alpha(alpha, m), n_bins - 1)
    return q * (1.0 / n_cur + 1.0 / n_ref)


@lru_cache(maxsize=4096)
def psi_min_support(threshold: float, n_ref: int, n_bins: int, alpha: float,
                    m: int = 1) -> int | None:
    """The smallest window n at which ``threshold`` is at or above the PSI noise quantile:
    below it the threshold sits inside the noise and PSI cannot decide. None when even an
    infinite window would not do (the reference alone is too small for the threshold)."""
    if n_bins <= 1:
        return 1
    q = _chi2_isf(_family_alpha(alpha, m), n_bins - 1)
    room = threshold / q - 1.0 / n_ref
    if room <= 0:
        return None
    n = math.ceil(1.0 / room)
    # guard the float edge: the quantile at n must not exceed the threshold
    while psi_noise_quantile(n, n_ref, n_bins, alpha, m) > threshold:
        n += 1
    return n


def embedding_noise_quantile(n_cur: int, n_ref: int, k: int, alpha: float, m: int = 1
                             ) -> float:
    """The 1 - alpha/m quantile of an embedding's effect (app/monitoring/embedding.py) when
    nothing changed: sqrt((1/n_cur + 1/n_ref) x max(0, chi2(k, 1 - alpha/m) - k)).

    The effect is sqrt(max(0, m2 - k v)), v = 1/n_cur + 1/n_ref, and under no change
    m2 / v ~ chi2(k) (``embedding_shift``); the effect is increasing in m2, so its quantile
    is the chi-square quantile read on the effect's scale, and an effect above it is the
    same event as the chi-square p-value below alpha / m. ``n_ref`` is the held-out half the
    windows are held against; ``m`` the embedding features tested together (Bonferroni).
    """
    if n_cur <= 0 or n_ref <= 0:
        raise ValueError("sample sizes must be positive")
    if k <= 0:
        return 0.0
    q = _chi2_isf(_family_alpha(alpha, m), int(k))
    return math.sqrt((1.0 / n_cur + 1.0 / n_ref) * max(q - k, 0.0))


@lru_cache(maxsize=4096)
def embedding_min_support(threshold: float, n_ref: int, k: int, alpha: float,
                          m: int = 1) -> int | None:
    """The smallest window n at which the effect line ``threshold`` is at or above the
    effect's noise quantile at alpha / m (``embedding_noise_quantile``): below it an effect
    past the line is within what noise gives at that level, so the line decides nothing and
    the p-value alone would. None when even an infinite window would not do (the held-out
    reference's own noise reaches the line)."""
    if k <= 0:
        return 1
    excess = _chi2_isf(_family_alpha(alpha, m), int(k)) - k
    if excess <= 0:
        return 1
    room = threshold * threshold / excess - 1.0 / n_ref
    if room <= 0:
        return None
    n = max(math.ceil(1.0 / room), 1)
    # guard the float edge both ways: the quantile at n within the line, at n - 1 above it
    while embedding_noise_quantile(n, n_ref, k, alpha, m) > threshold:
        n += 1
    while n > 1 and embedding_noise_quantile(n - 1, n_ref, k, alpha, m) <= threshold:
        n -= 1
    return n


def psi_evidence(ref_counts: Any, cur_counts: Any) -> float:
    """The p-value of Pearson's chi-square test of homogeneity on the 2 x B table of the
    reference's and the window's counts (bins empty on both sides left out; no continuity
    correction): scipy.stats.chi2_contingency(..., correction=False).

    PSI's noise quantile is this test's statistic read on the PSI scale, and the two agree
    where every bin holds many rows. They part where a bin's expected count in the window is
    small: an empty window bin sends PSI through the 1e-4 floor (0.31 for a 5% bin), while
    the chi-square statistic stays bounded (about n e). A binary feature at 5% has no 1 in
    200 rows with probability 4e-5, PSI 0.30; the test gives p 0.0014, no evidence. So a
    PSI decision needs this p-value below alpha / m as well. One populated bin: p = 1.
    """
    ref = np.asarray(ref_counts, dtype=np.float64).reshape(-1)
    cur = np.asarray(cur_counts, dtype=np.float64).reshape(-1)
    if ref.shape != cur.shape:
        raise ValueError("counts must have equal length")
    keep = (ref + cur) > 0
    ref, cur = ref[keep], cur[keep]
    n_ref, n_cur = float(ref.sum()), float(cur.sum())
    if ref.shape[0] < 2 or n_ref <= 0 or n_cur <= 0:
        return 1.0
    total = ref + cur
    e_ref, e_cur = total * (n_ref / (n_ref + n_cur)), total * (n_cur / (n_ref + n_cur))
    x2 = float((((ref - e_ref) ** 2) / e_ref).sum() + (((cur - e_cur) ** 2) / e_cur).sum())
    return float(stats.chi2.sf(x2, ref.shape[0] - 1))


def ks_noise_quantile(n_cur: int, n_ref: int, alpha: float, m: int = 1) -> float:
    """The D that two samples of one continuous distribution exceed with probability
    alpha/m: scipy's asymptotic two-sample distribution, kstwo(round(n n_ref / (n + n_ref))),
    the one ``ks`` takes its p-value from above 10,000 values. Ties (few-valued columns) only
    make D smaller, so the quantile stays conservative for them."""
    if n_cur <= 0 or n_ref <= 0:
        raise ValueError("sample sizes must be positive")
    m_big, n_small = sorted([float(n_cur), float(n_ref)], reverse=True)
    en = max(float(np.round(m_big * n_small / (m_big + n_small))), 1.0)
    p = _family_alpha(alpha, m)
    return KS_NOISE_MEMO.get((p, en), lambda: float(stats.kstwo.isf(p, en)))


def ece_null_quantiles(counts: Any, mean_confidence: Any, qs: Any, *,
                       draws: int = ECE_NULL_DRAWS, seed: int = ECE_NULL_SEED) -> np.ndarray:
    """Quantiles of ECE when the model is calibrated, at the window's own confidences.

    Outcomes are redrawn from the scores: in each bin with n_b rows and mean confidence c_b,
    S_b ~ Binomial(n_b, c_b), and ECE* = sum_b |S_b - n_b c_b| / n. Bins are independent.
    Within a bin the true outcome count is Poisson-binomial (one probability per row); the
    Binomial with the same mean is larger in the convex order (Hoeffding 1956), and ECE is a
    convex function of the counts, so this null is the conservative one. Seeded: the same
    sums give the same quantiles on every replica; cost O(draws x bins), not O(rows).
    """
    c = np.asarray(counts, dtype=np.int64).reshape(-1)
    p = np.clip(np.asarray(mean_confidence, dtype=np.float64).reshape(-1), 0.0, 1.0)
    keep = c > 0
    c, p = c[keep], p[keep]
    q = np.asarray(qs, dtype=np.float64)
    key = (digest(c), digest(p), digest(q), int(draws), int(seed))
    return ECE_NULL_MEMO.get(key, lambda: _ece_null(c, p, q, int(draws), seed)).copy()


def _ece_null(c: np.ndarray, p: np.ndarray, q: np.ndarray, draws: int,
              seed: int) -> np.ndarray:
    n = int(c.sum())
    if n == 0:
        return np.zeros_like(q)
    rng = np.random.default_rng(seed)
    s = rng.binomial(c, p, size=(draws, c.shape[0]))
    ece = np.abs(s - c * p).sum(axis=1) / n
    return np.quantile(ece, q, method="higher")


@dataclass(frozen=True)
class ProportionTest(JsonResult):
    """A one-sided test of 'cohort > rest': its statistic and p-value."""

    z: float
    pvalue: float


def fisher_exact_test(k1: int, n1: int, k2: int, n2: int) -> ProportionTest:
    """Is k1 of n1 a higher rate than k2 of n2? Fisher's exact test, one-sided: the p-value
    P(X >= k1) for X hypergeometric (n1 draws from n1 + n2 rows holding k1 + k2 events), as
    scipy.stats.fisher_exact(..., alternative="greater"). ``z`` is the pooled two-proportion
    z, (p1 - p2) / sqrt(p (1 - p) (1/n1 + 1/n2)), the effect in standard errors.

    Exact at every size: conditional on the total number of events the null distribution is
    hypergeometric whatever the common rate, so the test never rejects more often than its
    level. The normal approximation (the z test, P(Z >= z)) does, where a side is small: for
    81 rows at a rate of 0.2 against 919 others, P(z-test p < 1e-5) = 3.7e-5. Equal rates of 0
    or 1, or an empty side, give z = 0 and p = 1.
    """
    if min(n1, n2) <= 0:
        return ProportionTest(0.0, 1.0)
    if not (0 <= k1 <= n1 and 0 <= k2 <= n2):
        raise ValueError("need 0 <= k <= n")
    pooled = (k1 + k2) / (n1 + n2)
    var = pooled * (1 - pooled) * (1 / n1 + 1 / n2)
    if var <= 0:
        return ProportionTest(0.0, 1.0)
    z = (k1 / n1 - k2 / n2) / math.sqrt(var)
    p = stats.fisher_exact([[k1, n1 - k1], [k2, n2 - k2]], alternative="greater").pvalue
    return ProportionTest(float(z), min(1.0, float(p)))


def cohort_vs_rest(errors: Any, counts: Any, tested: Any) -> list[ProportionTest | None]:
    """Each tested cohort's error rate against the rest of the traffic (all other rows,
    tested or not), one-sided; None for cohorts not tested. The cohort is left out of what it
    is compared with, so a degrading cohort is not diluted by its own rows."""
    k = np.asarray(errors, dtype=np.int64).reshape(-1)
    n = np.asarray(counts, dtype=np.int64).reshape(-1)
    t = np.asarray(tested, dtype=bool).reshape(-1)
    tk, tn = int(k.sum()), int(n.sum())
    return [fisher_exact_test(int(k[i]), int(n[i]), tk - int(k[i]), tn - int(n[i]))
            if t[i] else None for i in range(k.shape[0])]


def welch_test(n1: int, sum1: float, sumsq1: float, n2: int, sum2: float,
               sumsq2: float) -> ProportionTest:
    """One-sided Welch t test of 'mean 1 > mean 2' from sums (of |residual| and of squared
    residuals for MAE: |r|^2 = r^2), equal to scipy.stats.ttest_ind(..., equal_var=False,
    alternative="greater") on the values: sample variances (ddof 1), Welch-Satterthwaite
    degrees of freedom. Fewer than two values a side, or no variance, give z = 0 and p = 1.
    ``z`` holds the t statistic."""
    if min(n1, n2) < 2:
        return ProportionTest(0.0, 1.0)
    m1, m2 = sum1 / n1, sum2 / n2
    v1 = max(sumsq1 - n1 * m1 * m1, 0.0) / (n1 - 1)
    v2 = max(sumsq2 - n2 * m2 * m2, 0.0) / (n2 - 1)
    a, b = v1 / n1, v2 / n2
    if a + b <= 0:
        return ProportionTest(0.0, 1.0)
    t = (m1 - m2) / math.sqrt(a + b)
    df = (a + b) ** 2 / (a * a / (n1 - 1) + b * b / (n2 - 1))
    return ProportionTest(float(t), float(stats.t.sf(t, df)))


def mae_vs_rest(counts: Any, sum_abs: Any, sum_sq: Any, tested: Any
                ) -> list[ProportionTest | None]:
    """Each tested cohort's mean absolute error against the rest of the traffic (Welch,
    one-sided); None for cohorts not tested."""
    n = np.asarray(counts, dtype=np.int64).reshape(-1)
    s1 = np.asarray(sum_abs, dtype=np.float64).reshape(-1)
    s2 = np.asarray(sum_sq, dtype=np.float64).reshape(-1)
    t = np.asarray(tested, dtype=bool).reshape(-1)
    tn, t1, t2 = int(n.sum()), float(s1.sum()), float(s2.sum())
    return [welch_test(int(n[i]), float(s1[i]), float(s2[i]), tn - int(n[i]),
                       t1 - float(s1[i]), t2 - float(s2[i])) if t[i] else None
            for i in range(n.shape[0])]


@lru_cache(maxsize=4096)
def out_of_range_null(n_ref: int, alpha: float, m: int = 1) -> float:
    """The 1 - alpha/m quantile of the probability mass outside a reference's observed range
    [min, max] when nothing changed.

    For n_ref independent draws of a continuous distribution the range covers mass
    U(n) - U(1) ~ Beta(n_ref - 1, 2), so the mass outside it is Beta(2, n_ref - 1) (mean
    2 / (n_ref + 1)). A window's out-of-range share is tested against this upper quantile, not
    the mean: a small reference's range may by chance leave much mass outside it. Ties
    (discrete features) only make the true mass smaller, so the test stays conservative.
    """
    if n_ref < 2:
        return 1.0
    return float(stats.beta.ppf(1 - _family_alpha(alpha, m), 2, n_ref - 1))


def binomial_excess(k: int, n: int, p0: float) -> float:
    """One-sided p-value P(X >= k) for X ~ Binomial(n, p0): is k of n more than p0 allows?"""
    if not 0 <= k <= n:
        raise ValueError("need 0 <= k <= n")
    if k == 0:
        return 1.0
    return float(stats.binom.sf(k - 1, n, min(max(p0, 0.0), 1.0)))


def mae_excess(n: int, sum_abs: float, sum_sq: float, line: float) -> float:
    """One-sided p-value that a mean absolute error exceeds ``line``, from the count, sum and
    sum of squares of the absolute errors: Student's t with n - 1 degrees of freedom on
    (mean - line) / (s / sqrt(n)), s the sample standard deviation (ddof 1), as
    scipy.stats.ttest_1samp(..., popmean=line, alternative="greater"). Fewer than two values
    give 1; no spread gives 0 or 1 as the mean is above the line or not."""
    if n < 2:
        return 1.0
    mean = sum_abs / n
    var = max(sum_sq - n * mean * mean, 0.0) / (n - 1)
    if var <= 0:
        return 0.0 if mean > line else 1.0
    return float(stats.t.sf((mean - line) / math.sqrt(var / n), n - 1))


def bonferroni_adjust(p: float, m: int) -> float:
    return min(1.0, float(p) * max(int(m), 1))


__all__ = [
    "ECE_NULL_DRAWS",
    "ProportionTest",
    "binomial_excess",
    "bonferroni_adjust",
    "cohort_vs_rest",
    "ece_null_quantiles",
    "embedding_min_support",
    "embedding_noise_quantile",
    "fisher_exact_test",
    "ks_noise_quantile",
    "mae_excess",
    "mae_vs_rest",
    "out_of_range_null",
    "psi_evidence",
    "psi_min_support",
    "psi_noise_quantile",
    "welch_test",
]
