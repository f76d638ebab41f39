import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from monitoring_testutil import assert_json_safe

from app.monitoring import INSUFFICIENT_DATA, INVALID_INPUT, OK, cohort_error, wilson_interval


def _wilson_hand(k, n, z):
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return centre - half, centre + half


def test_wilson_textbook_value():
    # 3 successes in 10 trials at 95%: (0.1078, 0.6032) (Newcombe 1998 style tables)
    lo, hi = wilson_interval(3, 10)
    assert lo == pytest.approx(0.1078, abs=5e-5) and hi == pytest.approx(0.6032, abs=5e-5)
    assert (lo, hi) == pytest.approx(_wilson_hand(3, 10, 1.959963984540054), rel=1e-12)


def test_wilson_ends_and_empty():
    assert wilson_interval(0, 10)[0] == 0.0
    assert wilson_interval(10, 10)[1] == 1.0
    assert wilson_interval(0, 0) == (0.0, 1.0)
    with pytest.raises(ValueError):
        wilson_interval(5, 4)


@settings(max_examples=500, deadline=None)
@given(st.integers(1, 10**7).flatmap(lambda n: st.tuples(st.integers(0, n), st.just(n))),
       st.sampled_from([1.0, 1.645, 1.96, 2.576]))
def test_wilson_contains_p_hat_and_stays_in_unit_interval(kn, z):
    k, n = kn
    lo, hi = wilson_interval(k, n, z)
    assert 0.0 <= lo <= k / n <= hi <= 1.0
    if 0 < k < n:
        h_lo, h_hi = _wilson_hand(k, n, z)
        assert lo == pytest.approx(h_lo, rel=1e-9, abs=1e-15)
        assert hi == pytest.approx(h_hi, rel=1e-9, abs=1e-15)


def test_binary_cohorts_by_hand():
    cohorts = np.array(["a"] * 4 + ["b"] * 2 + [None] * 2, dtype=object)
    scores = np.array([0.9, 0.2, 0.6, 0.5, 0.1, 0.4, 0.7, 0.3])
    labels = np.array([1, 0, 0, 0, 1, 0, 1, 1])
    # predicted (>= 0.5): 1 0 1 1 | 0 0 | 1 0 ; errors: 0 0 1 1 | 1 0 | 0 1
    r = cohort_error(cohorts, scores, labels, task="binary", min_n=3)
    assert r.status == OK and r.n == 8
    assert r.overall.error_rate == 4 / 8
    by = {c.cohort: c for c in r.cohorts}
    assert by["a"].error_rate == 2 / 4 and by["a"].delta_error_rate == 0.0
    assert by["b"].error_rate == 1 / 2 and by["b"].decidable is False
    assert by[None].n == 2 and by[None].error_rate == 1 / 2
    assert (by["a"].ci_low, by["a"].ci_high) == wilson_interval(2, 4)
    assert by["a"].decidable is True
    assert_json_safe(r)


def test_threshold_is_configurable():
    r = cohort_error(["x"] * 3, [0.6, 0.6, 0.6], [1, 1, 0], task="binary",
                     threshold=0.7, min_n=1)
    assert r.overall.error_rate == 2 / 3


def test_multiclass_cohorts_by_hand():
    probs = np.array([[0.7, 0.3], [0.2, 0.8], [0.5, 0.5], [0.1, 0.9]])
    r = cohort_error([1, 1, 2, 2], probs, [0, 0, 1, 1], task="multiclass", min_n=1)
    by = {c.cohort: c for c in r.cohorts}
    assert by["1"].error_rate == 1 / 2
    assert by["2"].error_rate == 1 / 2  # the 0.5/0.5 tie goes to class 0 -> wrong
    assert r.overall.error_rate == 2 / 4


def test_regression_cohorts_by_hand():
    cohorts = ["u", "u", "v", "v", "v"]
    pred = [1.0, 2.0, 3.0, 5.0, 0.0]
    y = [1.5, 1.0, 3.0, 2.0, 1.0]
    r = cohort_error(cohorts, pred, y, task="regression", min_n=1)
    by = {c.cohort: c for c in r.cohorts}
    assert by["u"].mae == pytest.approx((0.5 + 1.0) / 2)
    assert by["u"].rmse == pytest.approx(math.sqrt((0.25 + 1.0) / 2))
    assert by["v"].mae == pytest.approx((0 + 3 + 1) / 3)
    assert r.overall.rmse == pytest.approx(math.sqrt((0.25 + 1 + 0 + 9 + 1) / 5))
    assert by["v"].delta_mae == pytest.approx(by["v"].mae - r.overall.mae)
    assert by["u"].error_rate is None and by["u"].worse_than_overall is None


def test_worse_cohort_flagged_only_when_decidable():
    rng = np.random.default_rng(1)
    n = 6000
    cohort = rng.choice(np.array(["ok", "bad", "tiny"]), n, p=[0.8, 0.19, 0.01])
    y = rng.integers(0, 2, n)
    wrong = rng.random(n) < np.where(cohort == "bad", 0.3, 0.1)
    wrong[cohort == "tiny"] = True
    scores = np.where(wrong, 1 - y, y).astype(float)
    r = cohort_error(cohort, scores, y, task="binary")
    by = {c.cohort: c for c in r.cohorts}
    assert by["bad"].worse_than_overall is True
    assert by["ok"].worse_than_overall is False
    assert by["tiny"].n < 100 and by["tiny"].decidable is False
    assert by["tiny"].error_rate == 1.0 and by["tiny"].worse_than_overall is False


def test_whole_window_below_min_n_is_insufficient_but_reported():
    r = cohort_error(["a", "b"], [0.9, 0.1], [1, 1], task="binary", min_n=100)
    assert r.status == INSUFFICIENT_DATA and "n=2" in r.reason
    assert all(not c.decidable for c in r.cohorts)
    assert r.overall.error_rate == 0.5
    empty = cohort_error([], [], [], task="binary")
    assert empty.status == INSUFFICIENT_DATA and empty.overall.error_rate is None
    assert_json_safe(empty)


def test_missing_predictions_and_labels_are_dropped():
    r = cohort_error(["a"] * 4, [0.9, np.nan, 0.1, 0.8], [1, 1, None, 0], task="binary",
                     min_n=1)
    assert r.n == 2 and r.n_dropped == 2 and r.overall.error_rate == 0.5


@pytest.mark.parametrize(
    ("task", "pred", "labels"),
    [("binary", [0.1, 0.2], [0, 3]), ("binary", [0.1], [0, 1]),
     ("multiclass", [0.1, 0.9], [0, 1]), ("multiclass", [[0.5, 0.5]], [4]),
     ("regression", [1.0, np.inf], [1.0, 2.0])],
)
def test_invalid_inputs(task, pred, labels):
    r = cohort_error(["a"] * len(labels), pred, labels, task=task, min_n=1)
    assert r.status == INVALID_INPUT
    assert_json_safe(r)


def test_mean_interval_equals_scipy_normal_interval_from_sums():
    from scipy import stats

    from app.monitoring import mean_interval

    x = np.abs(np.random.default_rng(5).normal(size=357))
    low, high = mean_interval(x.size, float(x.sum()), float((x * x).sum()))
    ref = stats.norm.interval(0.95, loc=x.mean(), scale=stats.sem(x))
    assert (low, high) == pytest.approx(ref, rel=1e-10)
    assert mean_interval(1, 2.0, 4.0) == (2.0, 2.0)  # one value: no spread known
    assert mean_interval(3, 0.03, 0.1)[0] == 0.0  # floored at zero
    with pytest.raises(ValueError):
        mean_interval(0, 0.0, 0.0)
