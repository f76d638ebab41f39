import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from monitoring_testutil import assert_json_safe

from app.monitoring import (
    INSUFFICIENT_DATA,
    INVALID_INPUT,
    OK,
    calibration_binary,
    calibration_multiclass,
)
from app.monitoring.calibration import confidence_bin_index


def test_binary_ece_mce_brier_by_hand():
    scores = np.array([0.1, 0.2, 0.35, 0.8, 0.9, 1.0])
    labels = np.array([0, 1, 0, 1, 1, 0])
    r = calibration_binary(scores, labels, n_bins=2, min_n=1)
    # bins: [0, 0.5] holds 0.1, 0.2, 0.35 (1 positive); (0.5, 1] holds 0.8, 0.9, 1.0 (2)
    conf_lo, acc_lo = (0.1 + 0.2 + 0.35) / 3, 1 / 3
    conf_hi, acc_hi = (0.8 + 0.9 + 1.0) / 3, 2 / 3
    ece = 3 / 6 * abs(acc_lo - conf_lo) + 3 / 6 * abs(acc_hi - conf_hi)
    mce = max(abs(acc_lo - conf_lo), abs(acc_hi - conf_hi))
    brier = (0.1**2 + 0.8**2 + 0.35**2 + 0.2**2 + 0.1**2 + 1.0**2) / 6
    assert r.status == OK
    assert r.ece == pytest.approx(ece, rel=1e-12)
    assert r.mce == pytest.approx(mce, rel=1e-12)
    assert r.brier == pytest.approx(brier, rel=1e-12)
    assert [b.count for b in r.bins] == [3, 3]
    assert r.bins[1].mean_confidence == pytest.approx(conf_hi)
    assert r.bins[1].observed_rate == pytest.approx(acc_hi)
    assert (r.bins[0].lower, r.bins[0].upper, r.bins[1].upper) == (0.0, 0.5, 1.0)
    assert_json_safe(r)


def test_bin_edges_right_closed_zero_first_one_last():
    idx = confidence_bin_index(np.array([0.0, 0.1, 0.10000001, 0.5, 0.9999, 1.0]), 10)
    assert idx.tolist() == [0, 0, 1, 4, 9, 9]


def test_mce_ignores_empty_bins_and_empty_bins_are_none():
    r = calibration_binary([0.05, 0.05, 0.95, 0.95], [0, 0, 1, 0], n_bins=10, min_n=1)
    assert r.mce == pytest.approx(abs(0.5 - 0.95))
    assert r.ece == pytest.approx(2 / 4 * 0.05 + 2 / 4 * 0.45)
    empty = [b for b in r.bins if b.count == 0]
    assert len(empty) == 8
    assert all(b.mean_confidence is None and b.observed_rate is None for b in empty)


def test_multiclass_top_label_and_brier_convention_by_hand():
    probs = np.array([[0.7, 0.2, 0.1], [0.1, 0.6, 0.3], [0.3, 0.3, 0.4], [0.05, 0.9, 0.05]])
    labels = np.array([0, 2, 2, 1])
    r = calibration_multiclass(probs, labels, n_bins=2, min_n=1)
    # confidences 0.7 (right), 0.6 (wrong), 0.4 (right), 0.9 (right)
    # [0, 0.5]: 0.4 right ; (0.5, 1]: 0.7, 0.6, 0.9 with 2 of 3 right
    ece = 1 / 4 * abs(1 - 0.4) + 3 / 4 * abs(2 / 3 - (0.7 + 0.6 + 0.9) / 3)
    brier = (
        (0.3**2 + 0.2**2 + 0.1**2)
        + (0.1**2 + 0.6**2 + 0.7**2)
        + (0.3**2 + 0.3**2 + 0.6**2)
        + (0.05**2 + 0.1**2 + 0.05**2)
    ) / 4
    assert r.ece == pytest.approx(ece, rel=1e-12)
    assert r.mce == pytest.approx(0.6, rel=1e-12)
    assert r.brier == pytest.approx(brier, rel=1e-12)


def test_multiclass_two_columns_brier_is_twice_binary():
    rng = np.random.default_rng(1)
    p = rng.random(500)
    y = (rng.random(500) < p).astype(int)
    b = calibration_binary(p, y)
    m = calibration_multiclass(np.column_stack([1 - p, p]), y)
    assert m.brier == pytest.approx(2 * b.brier)


def test_large_calibrated_data_has_near_zero_ece_overconfident_does_not():
    rng = np.random.default_rng(2)
    p = rng.random(200_000)
    y = (rng.random(p.size) < p).astype(np.int8)
    good = calibration_binary(p, y)
    assert good.ece < 0.01
    over = calibration_binary(np.where(p > 0.5, 0.5 + (p - 0.5) * 2, 0.5 - (0.5 - p) * 2)
                              .clip(0, 1), y)
    assert over.ece > 0.1
    assert over.mce > good.mce


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.floats(0, 1), st.booleans()), min_size=1, max_size=200),
       st.integers(1, 20))
def test_ece_and_mce_in_unit_interval(rows, n_bins):
    p = np.array([r[0] for r in rows])
    y = np.array([r[1] for r in rows])
    r = calibration_binary(p, y, n_bins=n_bins, min_n=1)
    assert 0 <= r.ece <= r.mce <= 1
    assert 0 <= r.brier <= 1
    assert sum(b.count for b in r.bins) == len(rows)
    assert_json_safe(r)


def test_single_class_present_is_reported_and_computed():
    r = calibration_binary(np.full(200, 0.1), np.zeros(200), min_n=100)
    assert r.status == OK and "one class" in r.reason
    assert r.ece == pytest.approx(0.1) and r.brier == pytest.approx(0.01)
    m = calibration_multiclass(np.tile([0.8, 0.1, 0.1], (150, 1)), np.zeros(150))
    assert m.status == OK and "one class" in m.reason


def test_missing_rows_dropped_and_insufficient():
    p = np.array([0.2, np.nan, 0.7] + [0.5] * 10)
    y = np.array([1, 0, None] + [1] * 10, dtype=object)
    r = calibration_binary(p, y, min_n=100)
    assert r.status == INSUFFICIENT_DATA and r.n == 11 and r.n_dropped == 2
    assert r.ece is None and "n=11" in r.reason
    assert_json_safe(r)
    assert calibration_binary([], []).status == INSUFFICIENT_DATA


@pytest.mark.parametrize(
    ("scores", "labels"),
    [([0.5, 1.5], [0, 1]), ([0.5, 0.5], [0, 2]), ([0.5], [0, 1]), ([0.5, np.inf], [0, 1])],
)
def test_binary_invalid_input(scores, labels):
    r = calibration_binary(scores, labels, min_n=1)
    assert r.status == INVALID_INPUT and r.ece is None
    assert_json_safe(r)


def test_multiclass_invalid_input():
    assert calibration_multiclass([[0.5, 0.6]], [0], min_n=1).status == INVALID_INPUT
    assert calibration_multiclass([[0.5, 0.5]], [2], min_n=1).status == INVALID_INPUT
    assert calibration_multiclass([0.5, 0.5], [0, 1], min_n=1).status == INVALID_INPUT


def test_ece_matches_definition_on_random_data():
    rng = np.random.default_rng(3)
    p = rng.random(1000)
    y = (rng.random(1000) < p**1.5).astype(int)
    r = calibration_binary(p, y, n_bins=15, min_n=1)
    total = 0.0
    for i in range(15):  # plain loop reference over bins
        lo, hi = i / 15, (i + 1) / 15
        m = (p > lo) & (p <= hi) if i else (p >= 0) & (p <= hi)
        if m.any():
            total += m.sum() / 1000 * abs(y[m].mean() - p[m].mean())
    assert r.ece == pytest.approx(total, rel=1e-9)
    assert not math.isnan(r.ece)
