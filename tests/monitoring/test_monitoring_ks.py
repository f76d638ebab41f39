import numpy as np
import pytest
from monitoring_testutil import assert_json_safe
from scipy import stats

from app.monitoring import (
    INSUFFICIENT_DATA,
    OK,
    KsPoints,
    benjamini_hochberg,
    bonferroni,
    correct_ks,
    ks,
    ks_from_counts,
    ks_statistic,
    ks_statistic_from_counts,
)


def _case(rng, i):
    """Random and adversarial pairs: ties, discrete data, unequal sizes, outliers."""
    kind = i % 8
    n1, n2 = int(rng.integers(1, 400)), int(rng.integers(1, 400))
    if kind == 0:
        return rng.normal(size=n1), rng.normal(rng.normal() * 0.3, size=n2)
    if kind == 1:  # heavy ties
        return rng.integers(0, 4, n1).astype(float), rng.integers(0, 5, n2).astype(float)
    if kind == 2:  # rounded continuous -> ties across samples
        return np.round(rng.normal(size=n1), 1), np.round(rng.normal(size=n2) * 1.3, 1)
    if kind == 3:  # very different sizes
        return rng.normal(size=int(rng.integers(1, 5))), rng.normal(size=n2)
    if kind == 4:  # identical samples
        a = rng.exponential(size=n1)
        return a, a.copy()
    if kind == 5:  # one sample constant
        return np.full(n1, 0.5), rng.random(n2)
    if kind == 6:  # disjoint supports
        return rng.random(n1), rng.random(n2) + 2
    return rng.standard_cauchy(n1), rng.standard_cauchy(n2) * 3


def test_statistic_bit_identical_to_scipy_on_many_cases():
    # scipy's raw statistic is the one its asymptotic branch reports; the exact branch
    # snaps D to the 1/lcm(n1, n2) lattice, which ks() takes from scipy directly.
    rng = np.random.default_rng(11)
    for i in range(800):
        a, b = _case(rng, i)
        expected = stats.ks_2samp(a, b, method="asymp").statistic
        assert ks_statistic(np.sort(a), np.sort(b)) == expected, (i, a, b)
        assert ks_statistic(np.sort(b), np.sort(a)) == expected


def test_ks_equals_scipy_auto_on_many_cases_with_nans_ignored():
    rng = np.random.default_rng(12)
    for i in range(500):
        a, b = _case(rng, i)
        a_n = a.copy()
        b_n = b.copy()
        a_n[rng.random(a.size) < 0.1] = np.nan
        b_n[rng.random(b.size) < 0.1] = np.nan
        ok_a, ok_b = a_n[~np.isnan(a_n)], b_n[~np.isnan(b_n)]
        if ok_a.size == 0 or ok_b.size == 0:
            continue
        r = ks(a_n, b_n, min_n=1)
        expected = stats.ks_2samp(ok_a, ok_b)
        assert r.status == OK
        assert r.statistic == expected.statistic
        assert r.pvalue == expected.pvalue
        assert r.n_ref_missing == a_n.size - ok_a.size
        assert_json_safe(r)


@pytest.mark.parametrize(
    ("n1", "n2", "shift", "discrete"),
    [(12000, 15000, 0.0, False), (20001, 10500, 0.03, False), (30000, 25000, 0.0, True),
     (11000, 11000, 0.5, False), (50000, 12000, 0.02, True)],
)
def test_asymptotic_branch_equals_scipy(n1, n2, shift, discrete):
    rng = np.random.default_rng(n1 + n2)
    a, b = rng.normal(size=n1), rng.normal(shift, size=n2)
    if discrete:
        a, b = np.round(a, 1), np.round(b, 1)
    r = ks(a, b, min_n=1)
    expected = stats.ks_2samp(a, b)
    assert r.method == "asymp"
    assert (r.statistic, r.pvalue) == (expected.statistic, expected.pvalue)


def test_decision_needs_effect_size_not_only_p():
    rng = np.random.default_rng(4)
    big_small_shift = ks(rng.normal(size=50000), rng.normal(0.05, size=50000))
    assert big_small_shift.pvalue < 1e-10  # very significant ...
    assert big_small_shift.statistic < 0.1
    assert big_small_shift.drift is False  # ... but not an effect worth paging about
    real = ks(rng.normal(size=5000), rng.normal(0.6, size=5000))
    assert real.drift is True
    tiny = ks(rng.normal(size=30), rng.normal(0.5, size=30), min_n=10)
    assert tiny.statistic > 0.1 and tiny.pvalue > 0.05 and tiny.drift is False


def test_thresholds_configurable():
    rng = np.random.default_rng(5)
    a, b = rng.normal(size=20000), rng.normal(0.05, size=20000)
    assert ks(a, b).drift is False
    assert ks(a, b, d_threshold=0.01).drift is True
    assert ks(a, b, d_threshold=0.01, alpha=1e-300).drift is False


def test_decision_mode_skips_only_p_values_that_cannot_change_the_decision():
    rng = np.random.default_rng(6)
    a, b = rng.normal(size=60000), rng.normal(0.02, size=60000)
    exact = ks(a, b)
    lazy = ks(a, b, exact_pvalue=False)
    assert lazy.statistic == exact.statistic and exact.statistic <= 0.1
    assert lazy.pvalue is None and lazy.drift is False is exact.drift
    assert exact.pvalue <= lazy.pvalue_bound <= 1
    big = ks(a, rng.normal(0.5, size=60000), exact_pvalue=False)
    assert big.pvalue is not None and big.drift is True


def test_insufficient_and_all_missing():
    r = ks(np.full(500, np.nan), np.arange(500.0))
    assert r.status == INSUFFICIENT_DATA and r.statistic is None and r.drift is None
    assert r.n_ref == 0 and r.n_ref_missing == 500
    assert "n=0" in r.reason
    small = ks(np.arange(50.0), np.arange(500.0))
    assert small.status == INSUFFICIENT_DATA and "n=50" in small.reason
    assert_json_safe(small)
    empty = ks(np.array([]), np.array([]), min_n=0)
    assert empty.status == INSUFFICIENT_DATA


def test_constant_features():
    same = ks(np.full(300, 2.0), np.full(400, 2.0))
    assert same.statistic == 0.0 and same.pvalue == 1.0 and same.drift is False
    moved = ks(np.full(300, 2.0), np.full(400, 3.0))
    assert moved.statistic == 1.0 and moved.drift is True


def test_bh_matches_scipy_false_discovery_control():
    rng = np.random.default_rng(7)
    for m in (1, 2, 5, 37, 200):
        p = rng.random(m) ** 3
        p[: m // 4] = p[-1]  # ties
        assert np.allclose(benjamini_hochberg(p), stats.false_discovery_control(p),
                           rtol=1e-15, atol=0)


def test_bonferroni_by_hand():
    assert bonferroni([0.01, 0.2, 0.5]).tolist() == [0.03, pytest.approx(0.6), 1.0]


def test_correction_across_features_re_decides_drift():
    rng = np.random.default_rng(8)
    base = rng.normal(size=400)
    results = {
        f"f{i}": ks(base, rng.normal(0.25 if i == 0 else 0.16, size=400)) for i in range(20)
    }
    results["few"] = ks(base[:5], base[:5])  # insufficient, passes through untouched
    raw_drift = {k for k, r in results.items() if r.drift}
    bonf = correct_ks(results, "bonferroni")
    bh = correct_ks(results, "bh")
    oks = [k for k, r in results.items() if r.status == OK]
    for k in oks:
        assert bonf[k].pvalue_adjusted == pytest.approx(min(1.0, results[k].pvalue * len(oks)))
        assert bonf[k].drift == (results[k].statistic > 0.1 and bonf[k].pvalue_adjusted < 0.05)
    expected_bh = stats.false_discovery_control([results[k].pvalue for k in oks])
    assert [bh[k].pvalue_adjusted for k in oks] == pytest.approx(expected_bh.tolist())
    assert bh["few"] == results["few"]
    bonf_drift = {k for k, r in bonf.items() if r.drift}
    assert bonf_drift <= raw_drift and "f0" in bonf_drift


@pytest.mark.parametrize("i", range(48))
def test_ks_from_slot_counts_equals_scipy(i):
    """Counts of current values at and between the reference points are all KS needs."""
    rng = np.random.default_rng(1000 + i)
    ref, cur = _case(rng, i)
    if i % 3 == 0:  # beyond scipy's exact limit: D from the counts, asymptotic p
        cur = np.concatenate([cur, rng.normal(size=12_000)])
    points = KsPoints.of(ref)
    counts = np.bincount(points.slots(cur), minlength=points.n_slots)
    got = ks_from_counts(points, counts, min_n=1)
    expected = stats.ks_2samp(ref, cur)
    assert got.statistic == float(expected.statistic)
    assert got.pvalue == float(expected.pvalue)
    assert got.n_ref == ref.size and got.n_cur == cur.size
    if max(ref.size, cur.size) > 10_000:
        assert ks_statistic_from_counts(points, counts) == float(expected.statistic)


def test_ks_from_counts_reports_missing_and_too_few():
    points = KsPoints.of(np.arange(500.0))
    r = ks_from_counts(points, np.zeros(points.n_slots, np.int64), n_cur_missing=7)
    assert r.status == INSUFFICIENT_DATA and r.n_cur == 0 and r.n_cur_missing == 7
    assert_json_safe(r)


@pytest.mark.parametrize("shift", [0.0, 0.3, -0.5])
def test_ks_curves_attain_scipys_d_where_the_raw_ecdfs_differ_by_it(shift):
    from app.monitoring import ks_curves
    rng = np.random.default_rng(11)
    ref = np.round(rng.normal(size=700), 2)  # ties on both sides
    cur = np.round(rng.normal(shift, 1.2, size=400), 2)
    points = KsPoints.of(ref)
    slots, counts = points.slot_counts(np.sort(cur))
    dense = np.zeros(points.n_slots, dtype=np.int64)
    dense[slots] = counts
    c = ks_curves(points, dense)
    assert c.statistic == ks_statistic_from_counts(points, dense)
    scipy = stats.ks_2samp(ref, cur)
    assert c.statistic == pytest.approx(scipy.statistic, rel=1e-12)
    if c.side == "at":
        assert c.at == scipy.statistic_location
    else:  # attained on the step just left of the point, where scipy names a current value
        assert c.points[c.index - 1] <= scipy.statistic_location < c.at
    assert c.points.tolist() == np.unique(ref).tolist()
    # both curves are the raw samples' ECDFs at the points
    assert c.reference.tolist() == [np.mean(ref <= x) for x in c.points]
    assert np.allclose(c.current, [np.mean(cur <= x) for x in c.points], rtol=0, atol=1e-15)
    side = "right" if c.side == "at" else "left"  # at the point, or just below it
    f_ref = np.searchsorted(np.sort(ref), c.at, side=side) / ref.size
    f_cur = np.searchsorted(np.sort(cur), c.at, side=side) / cur.size
    assert (c.reference_at, c.current_at) == pytest.approx((f_ref, f_cur), abs=1e-15)
    assert abs(f_ref - f_cur) == pytest.approx(c.statistic, abs=1e-12)


def test_ks_curves_need_both_samples():
    from app.monitoring import ks_curves
    points = KsPoints.of(np.array([1.0, 2.0, 3.0]))
    assert ks_curves(points, np.zeros(points.n_slots, dtype=np.int64)) is None
