"""The noise gates against scipy, exact enumeration, hand-computed cases and simulation of
the null they claim to bound."""

import math

import numpy as np
import pytest
from monitoring_testutil import assert_json_safe
from scipy import stats

from app.monitoring import calibration_binary, psi
from app.monitoring.gates import (
    binomial_excess,
    cohort_vs_rest,
    ece_null_quantiles,
    embedding_min_support,
    embedding_noise_quantile,
    fisher_exact_test,
    ks_noise_quantile,
    mae_vs_rest,
    out_of_range_null,
    psi_evidence,
    psi_min_support,
    psi_noise_quantile,
    welch_test,
)

CHI2_1_95 = 1.959963984540054 ** 2  # chi-square, 1 df, 95% = z(97.5%) squared


def test_psi_noise_quantile_by_hand():
    assert psi_noise_quantile(100, 100, 2, 0.05) == pytest.approx(CHI2_1_95 * 0.02, rel=1e-12)
    # Bonferroni: alpha / m, and scipy's ppf agrees with the isf used inside
    expected = stats.chi2.ppf(1 - 0.001 / 51, 9) * (1 / 1000 + 1 / 10_000)
    assert psi_noise_quantile(1000, 10_000, 10, 0.001, m=51) == pytest.approx(expected, rel=1e-9)
    assert psi_noise_quantile(1000, 10_000, 1, 0.001) == 0.0  # one bin: PSI is always 0


def test_psi_noise_quantile_bounds_psi_of_two_samples_of_one_distribution():
    rng = np.random.default_rng(7)
    p = np.array([0.02, 0.05, 0.08, 0.1, 0.1, 0.1, 0.1, 0.15, 0.15, 0.15])
    n, n_ref, draws = 1000, 5000, 3000
    q = psi_noise_quantile(n, n_ref, p.size, 0.05)
    above = sum(psi(rng.multinomial(n_ref, p), rng.multinomial(n, p)).value > q
                for _ in range(draws))
    # chi-square with 9 df at 95%; the 1/n_ref term matters (without it about 14% exceed)
    assert 0.03 < above / draws < 0.075


@pytest.mark.parametrize("ref,cur", [
    ([9500, 500], [200, 0]), ([9500, 500], [170, 30]), ([10, 20, 30, 0], [12, 18, 25, 5]),
    ([1000, 0, 2000, 3000], [100, 0, 180, 320]), ([5, 1, 7], [3, 9, 0])])
def test_psi_evidence_is_scipys_chi_square_test_of_homogeneity(ref, cur):
    table = np.array([ref, cur])
    table = table[:, table.sum(axis=0) > 0]  # scipy refuses bins empty on both sides
    expected = stats.chi2_contingency(table, correction=False).pvalue
    assert psi_evidence(ref, cur) == pytest.approx(expected, rel=1e-9)


def test_psi_evidence_by_hand_and_degenerate_cases():
    # 2x2 [[90, 10], [70, 30]]: pooled 160/40, expected 80/20 per row; chi2 = 2 (100/80 +
    # 100/20) = 12.5 on one df
    assert psi_evidence([90, 10], [70, 30]) == pytest.approx(stats.chi2.sf(12.5, 1), rel=1e-12)
    assert psi_evidence([100, 0], [50, 0]) == 1.0  # one populated bin
    assert psi_evidence([0, 0], [5, 5]) == 1.0  # an empty reference
    with pytest.raises(ValueError):
        psi_evidence([1, 2], [1, 2, 3])


def test_psi_min_support_by_hand():
    # threshold 0.1, one df, alpha 0.05, reference of 1,000: 1 / (0.1 / 3.8415 - 0.001) = 39.9
    assert psi_min_support(0.1, 1000, 2, 0.05) == 40
    assert psi_noise_quantile(40, 1000, 2, 0.05) <= 0.1 < psi_noise_quantile(39, 1000, 2, 0.05)


@pytest.mark.parametrize("support,quantile,threshold,n_ref,width,alpha,m", [
    (psi_min_support, psi_noise_quantile, *case) for case in [
        (0.1, 10_000, 10, 0.001, 51), (0.1, 10_000, 3, 0.001, 1), (0.25, 5000, 10, 1e-4, 20),
        (0.02, 100_000, 10, 0.001, 51)]] + [
    (embedding_min_support, embedding_noise_quantile, *case) for case in [
        (0.25, 2500, 27, 1e-4, 1), (0.25, 5000, 32, 1e-4, 3), (0.1, 50_000, 6, 1e-3, 1),
        (0.5, 300, 2, 0.01, 2)]])
def test_min_support_is_where_the_line_leaves_the_noise(support, quantile, threshold, n_ref,
                                                        width, alpha, m):
    """PSI's (width: bins) and embedding drift's (width: directions) minimum support."""
    n = support(threshold, n_ref, width, alpha, m)
    assert quantile(n, n_ref, width, alpha, m) <= threshold
    assert quantile(n - 1, n_ref, width, alpha, m) > threshold


def test_psi_min_support_none_when_the_reference_is_too_small():
    # with 100 reference rows the quantile never falls below chi2 x 1/100
    assert psi_min_support(0.05, 100, 10, 0.001) is None
    assert psi_min_support(0.1, 100, 1, 0.001) == 1


def test_embedding_noise_quantile_by_hand():
    # k = 2: chi2_2 isf(a) = -2 ln a exactly; a = e^-3 gives 6, excess over k 4; n = n_ref =
    # 100: v = 0.02, quantile sqrt(0.02 x 4)
    a = math.exp(-3)
    assert embedding_noise_quantile(100, 100, 2, a) == pytest.approx(math.sqrt(0.08), rel=1e-12)
    # Bonferroni: alpha / m; scipy's ppf agrees with the isf inside
    q = stats.chi2.ppf(1 - 0.0001 / 3, 27)
    assert embedding_noise_quantile(1000, 2500, 27, 0.0001, m=3) == pytest.approx(
        math.sqrt((1 / 1000 + 1 / 2500) * (q - 27)), rel=1e-9)
    assert embedding_noise_quantile(1000, 2500, 0, 0.001) == 0.0
    with pytest.raises(ValueError):
        embedding_noise_quantile(0, 2500, 27, 0.001)


def test_embedding_noise_quantile_bounds_the_effect_under_no_change():
    # the effect of a window with no change: d ~ N(0, v I) in k whitened directions,
    # effect sqrt(max(0, |d|^2 - k v)); above the 95% quantile in 5% of windows
    rng = np.random.default_rng(8)
    k, n, n_ref, draws = 27, 100, 2500, 20_000
    v = 1 / n + 1 / n_ref
    d = rng.normal(scale=math.sqrt(v), size=(draws, k))
    effect = np.sqrt(np.maximum((d * d).sum(axis=1) - k * v, 0.0))
    above = float((effect > embedding_noise_quantile(n, n_ref, k, 0.05)).mean())
    assert 0.044 < above < 0.056
    # a fifth of such windows pass 0.25 sd: at n = 100 that line alone protects nothing
    assert 0.15 < float((effect > 0.25).mean()) < 0.25


def test_embedding_min_support_by_hand():
    # threshold 0.5, k = 2, alpha e^-3 (excess 4), reference 100: 1 / (0.25 / 4 - 0.01) = 19.05
    a = math.exp(-3)
    assert embedding_min_support(0.5, 100, 2, a) == 20
    assert embedding_noise_quantile(20, 100, 2, a) <= 0.5 < embedding_noise_quantile(19, 100, 2,
                                                                                      a)
    # the default critical line (0.25) at alpha 1e-4, k = 2 (excess 2 ln 1e4 - 2), reference
    # 10,000: 1 / (0.0625 / 16.4207 - 1e-4) = 269.8
    assert embedding_min_support(0.25, 10_000, 2, 1e-4) == 270


def test_embedding_min_support_none_when_the_reference_is_too_small():
    # 2,500 held-out rows over 27 directions: the reference's own noise at alpha 1e-3 is
    # sqrt(28.48 / 2500) = 0.107 sd, above a 0.1 line at any window n
    assert embedding_min_support(0.1, 2500, 27, 1e-3) is None
    assert embedding_min_support(0.1, 2500, 0, 1e-3) == 1


def test_ks_noise_quantile_is_scipys_asymptotic_distribution():
    q = ks_noise_quantile(1000, 10_000, 0.001, m=51)
    en = round(1000 * 10_000 / 11_000)
    assert stats.kstwo.sf(q, en) == pytest.approx(0.001 / 51, rel=1e-3)  # isf is inexact
    # about 0.05 with a 10,000-point reference and 10,000 or more current values
    assert 0.03 < ks_noise_quantile(10_000, 10_000, 0.001, m=51) < 0.05
    assert ks_noise_quantile(10 ** 6, 10_000, 0.001, 51) < ks_noise_quantile(10 ** 4, 10_000,
                                                                              0.001, 51)


def test_ks_noise_quantile_bounds_ks_2samp_under_the_null():
    rng = np.random.default_rng(3)
    q = ks_noise_quantile(300, 500, 0.05)
    draws = 1500
    above = sum(stats.ks_2samp(rng.normal(size=500), rng.normal(size=300)).statistic > q
                for _ in range(draws))
    assert 0.025 < above / draws < 0.07


def _exact_quantile(values: np.ndarray, probs: np.ndarray, q: float) -> float:
    order = np.argsort(values)
    cdf = np.cumsum(probs[order])
    return float(values[order][np.searchsorted(cdf, q - 1e-12)])


def test_ece_null_quantile_one_bin_matches_the_binomial():
    n, p = 200, 0.3
    k = np.arange(n + 1)
    exact = _exact_quantile(np.abs(k - n * p) / n, stats.binom.pmf(k, n, p), 0.99)
    got = ece_null_quantiles([n], [p], [0.99])[0]
    assert abs(got - exact) <= 1 / n + 1e-12  # one lattice step of Monte Carlo error


def test_ece_null_quantile_two_bins_matches_enumeration():
    (n1, p1), (n2, p2) = (40, 0.2), (60, 0.7)
    k1, k2 = np.meshgrid(np.arange(n1 + 1), np.arange(n2 + 1), indexing="ij")
    values = ((np.abs(k1 - n1 * p1) + np.abs(k2 - n2 * p2)) / (n1 + n2)).ravel()
    probs = np.outer(stats.binom.pmf(np.arange(n1 + 1), n1, p1),
                     stats.binom.pmf(np.arange(n2 + 1), n2, p2)).ravel()
    for q in (0.9, 0.99):
        exact = _exact_quantile(values, probs, q)
        got = ece_null_quantiles([n1, 0, n2], [p1, 0.5, p2], [q])[0]  # an empty bin is ignored
        assert abs(got - exact) <= 0.011


def test_ece_null_quantiles_are_deterministic_and_ordered():
    a = ece_null_quantiles([50, 80, 30], [0.1, 0.5, 0.9], [0.999, 0.9999])
    b = ece_null_quantiles([50, 80, 30], [0.1, 0.5, 0.9], [0.999, 0.9999])
    assert a.tolist() == b.tolist() and a[0] <= a[1]
    assert ece_null_quantiles([0, 0], [0.2, 0.4], [0.99]).tolist() == [0.0]


def test_ece_null_quantile_bounds_ece_of_a_calibrated_model():
    rng = np.random.default_rng(5)
    n, windows, flagged = 300, 300, 0
    for _ in range(windows):
        p = rng.beta(2, 3, size=n)
        r = calibration_binary(p, (rng.uniform(size=n) < p).astype(float), min_n=1)
        counts = [b.count for b in r.bins]
        conf = [b.mean_confidence or 0.0 for b in r.bins]
        flagged += r.ece > ece_null_quantiles(counts, conf, [0.95], draws=4000)[0]
    # at most alpha (up to Monte Carlo error), and not absurdly conservative
    assert 0.01 < flagged / windows < 0.08


@pytest.mark.parametrize("table", [(30, 100, 20, 100), (5, 40, 60, 900), (0, 10, 3, 50),
                                   (70, 100, 700, 1000), (1, 3, 0, 2), (30, 81, 190, 919),
                                   (3000, 8100, 190000, 919000)])
def test_fisher_exact_test_is_scipys_one_sided_fisher(table):
    k1, n1, k2, n2 = table
    t = fisher_exact_test(k1, n1, k2, n2)
    ref = stats.fisher_exact([[k1, n1 - k1], [k2, n2 - k2]], alternative="greater")
    assert t.pvalue == pytest.approx(min(1.0, ref.pvalue), rel=1e-9, abs=1e-300)
    chi2, _, _, _ = stats.chi2_contingency([[k1, n1 - k1], [k2, n2 - k2]], correction=False)
    assert t.z ** 2 == pytest.approx(chi2, rel=1e-10)  # z: Pearson's chi-square, signed
    assert (t.z > 0) == (k1 / n1 > k2 / n2)
    assert_json_safe(t)


def test_fisher_exact_test_by_hand_and_degenerate():
    # 3 of 4 against 1 of 6: 4 events in 10 rows, the cohort's 4 rows drawn at random;
    # P(X >= 3) = (C(4,3) C(6,1) + C(4,4) C(6,0)) / C(10,4) = 25 / 210
    t = fisher_exact_test(3, 4, 1, 6)
    assert t.pvalue == pytest.approx(25 / 210, rel=1e-12)
    pooled = 0.4
    assert t.z == pytest.approx((0.75 - 1 / 6) / math.sqrt(pooled * 0.6 * (1 / 4 + 1 / 6)),
                                rel=1e-12)
    assert fisher_exact_test(0, 50, 0, 500).pvalue == 1.0
    assert fisher_exact_test(50, 50, 500, 500).pvalue == 1.0
    assert fisher_exact_test(3, 0, 2, 10).pvalue == 1.0
    assert fisher_exact_test(0, 10, 5, 10).pvalue == 1.0  # lower: P(X >= 0) = 1
    with pytest.raises(ValueError):
        fisher_exact_test(5, 4, 0, 10)


def _size(n1: int, n2: int, rate: float, alpha: float, pvalue) -> float:
    """Exact P(pvalue(k1, n1, k2, n2) < alpha) for k1 ~ Bin(n1, rate), k2 ~ Bin(n2, rate):
    for each k2 (all but 1e-15 of its mass) the smallest rejected k1, found by bisection
    since p falls as k1 grows, then the binomial tail of k1 from there."""
    total = 0.0
    lo2, hi2 = stats.binom.ppf([1e-15, 1 - 1e-15], n2, rate).astype(int)
    for k2 in range(lo2, hi2 + 1):
        if pvalue(n1, n1, k2, n2) >= alpha:
            continue
        lo, hi = -1, n1  # p(lo) >= alpha (or lo = -1), p(hi) < alpha
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if pvalue(mid, n1, k2, n2) < alpha:
                hi = mid
            else:
                lo = mid
        total += stats.binom.pmf(k2, n2, rate) * stats.binom.sf(hi - 1, n1, rate)
    return total


def test_fisher_exact_test_keeps_its_level_where_the_z_test_does_not():
    """The page in 30 simulated stationary days at n = 1,000: a cohort of 81 labeled
    predictions at an error of 0.2 against 919 others, critical at p < 1e-5 per cohort. The
    normal approximation rejects 3.7 times as often as its level; Fisher's test, never more."""
    def z_test(k1, n1, k2, n2):
        pooled = (k1 + k2) / (n1 + n2)
        z = (k1 / n1 - k2 / n2) / math.sqrt(pooled * (1 - pooled) * (1 / n1 + 1 / n2))
        return 0.5 * math.erfc(z / math.sqrt(2))

    def exact(k1, n1, k2, n2):
        return fisher_exact_test(k1, n1, k2, n2).pvalue

    assert _size(81, 919, 0.2, 1e-5, z_test) == pytest.approx(3.66e-5, rel=0.01)
    for n1, n2, rate in [(81, 919, 0.2), (40, 160, 0.05), (300, 9700, 0.1)]:
        for alpha in (1e-3, 1e-5):
            assert _size(n1, n2, rate, alpha, exact) <= alpha
    assert _size(81, 919, 0.2, 1e-5, exact) == pytest.approx(6.0e-6, rel=0.01)


def test_cohort_vs_rest_leaves_the_cohort_out_of_the_rest():
    out = cohort_vs_rest([30, 20, 10], [100, 100, 100], [True, True, False])
    assert out[0] == fisher_exact_test(30, 100, 30, 200)
    assert out[1] == fisher_exact_test(20, 100, 40, 200)
    assert out[2] is None


@pytest.mark.parametrize("seed", range(4))
def test_welch_test_from_sums_is_scipys_one_sided_welch(seed):
    rng = np.random.default_rng(seed)
    a = np.abs(rng.normal(0.3, 1.0, size=int(rng.integers(3, 400))))
    b = np.abs(rng.normal(0.0, 1.5, size=int(rng.integers(3, 400))))
    t = welch_test(a.size, a.sum(), (a * a).sum(), b.size, b.sum(), (b * b).sum())
    ref = stats.ttest_ind(a, b, equal_var=False, alternative="greater")
    assert t.z == pytest.approx(ref.statistic, rel=1e-9)
    assert t.pvalue == pytest.approx(ref.pvalue, rel=1e-7)


def test_welch_test_degenerate_and_mae_vs_rest():
    assert welch_test(1, 2.0, 4.0, 10, 5.0, 5.0).pvalue == 1.0
    assert welch_test(3, 3.0, 3.0, 3, 3.0, 3.0).pvalue == 1.0  # no variance
    out = mae_vs_rest([10, 20, 30], [5.0, 8.0, 9.0], [4.0, 6.0, 7.0], [True, False, True])
    assert out[0] == welch_test(10, 5.0, 4.0, 50, 17.0, 13.0)
    assert out[1] is None


def test_out_of_range_null_by_hand_and_against_scipy_and_simulation():
    # n_ref = 2: the mass outside [min, max] is Beta(2, 1), cdf x^2, so the q quantile is sqrt(q)
    assert out_of_range_null(2, 0.19) == pytest.approx(math.sqrt(0.81), rel=1e-12)
    assert out_of_range_null(2, 0.1, m=2) == pytest.approx(math.sqrt(0.95), rel=1e-12)
    assert out_of_range_null(1, 0.001) == 1.0  # no range to speak of
    # simulated: the outside mass of uniform references exceeds the quantile about alpha often
    rng = np.random.default_rng(5)
    u = rng.uniform(size=(40_000, 50))
    outside = 1 - (u.max(axis=1) - u.min(axis=1))
    q = out_of_range_null(50, 0.05)
    assert 0.045 < float((outside > q).mean()) < 0.055
    assert stats.beta.mean(2, 49) == pytest.approx(2 / 51)


@pytest.mark.parametrize(("k", "n", "p0"), [(2, 3, 0.5), (0, 10, 0.1), (7, 100, 0.02),
                                            (100, 100, 0.9), (30, 1000, 0.01)])
def test_binomial_excess_is_the_one_sided_binomial_test(k, n, p0):
    expected = stats.binomtest(k, n, p0, alternative="greater").pvalue
    assert binomial_excess(k, n, p0) == pytest.approx(expected, rel=1e-9)


def test_binomial_excess_by_hand():
    assert binomial_excess(2, 3, 0.5) == pytest.approx(3 / 8 + 1 / 8, rel=1e-12)
    assert binomial_excess(0, 5, 0.3) == 1.0
    with pytest.raises(ValueError):
        binomial_excess(6, 5, 0.3)
