import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from monitoring_testutil import assert_json_safe

from app.monitoring import INSUFFICIENT_DATA, INVALID_INPUT, OK, PsiThresholds, psi


def test_psi_by_hand():
    ref = [50, 30, 20]
    cur = [30, 30, 40]
    r = psi(ref, cur, min_n=1)
    expected = (
        (0.3 - 0.5) * math.log(0.3 / 0.5)
        + (0.3 - 0.3) * math.log(0.3 / 0.3)
        + (0.4 - 0.2) * math.log(0.4 / 0.2)
    )
    assert r.status == OK
    assert r.value == pytest.approx(expected, rel=1e-12)
    assert r.band == "moderate"  # 0.2408
    assert r.n_ref == 100 and r.n_cur == 100
    assert_json_safe(r)


def test_empty_bin_is_floored_not_renormalised():
    # current has nothing in bin 2: a = 0 -> 1e-4; reference bin 0 empty: e = 0 -> 1e-4
    r = psi([0, 60, 40], [25, 75, 0], min_n=1)
    expected = (
        (0.25 - 1e-4) * math.log(0.25 / 1e-4)
        + (0.75 - 0.6) * math.log(0.75 / 0.6)
        + (1e-4 - 0.4) * math.log(1e-4 / 0.4)
    )
    assert r.value == pytest.approx(expected, rel=1e-12)
    assert r.band == "major"
    assert r.ref_proportions == (0.0, 0.6, 0.4)  # reported unfloored


def test_custom_eps_changes_the_floor():
    a = psi([0, 100], [50, 50], eps=1e-3, min_n=1).value
    expected = (0.5 - 1e-3) * math.log(0.5 / 1e-3) + (0.5 - 1.0) * math.log(0.5 / 1.0)
    assert a == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize(
    ("value", "band"),
    [(0.0, "stable"), (0.0999, "stable"), (0.1, "moderate"), (0.25, "moderate"),
     (0.2501, "major")],
)
def test_default_bands(value, band):
    assert PsiThresholds().band(value) == band


def test_thresholds_are_configurable():
    r = psi([50, 30, 20], [30, 30, 40], min_n=1, thresholds=PsiThresholds(0.3, 0.5))
    assert r.band == "stable"


def test_insufficient_data_reports_n():
    r = psi([10, 20], [1, 2], min_n=100)
    assert r.status == INSUFFICIENT_DATA
    assert r.value is None and r.band is None
    assert r.n_ref == 30 and r.n_cur == 3
    assert "n=3" in r.reason
    assert_json_safe(r)


def test_empty_window_is_insufficient_not_an_error():
    r = psi([10, 20], [0, 0], min_n=1)
    assert r.status == INSUFFICIENT_DATA and r.n_cur == 0


@pytest.mark.parametrize(
    ("ref", "cur"), [([1, 2], [1, 2, 3]), ([], []), ([1, -1], [1, 1]), ([1, np.nan], [1, 1])]
)
def test_invalid_counts(ref, cur):
    r = psi(ref, cur, min_n=1)
    assert r.status == INVALID_INPUT and r.value is None
    assert_json_safe(r)


counts = st.lists(st.integers(0, 10_000), min_size=1, max_size=20)


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_psi_non_negative_and_zero_for_identical(data):
    ref = data.draw(counts)
    cur = data.draw(st.lists(st.integers(0, 10_000), min_size=len(ref), max_size=len(ref)))
    if sum(ref) == 0 or sum(cur) == 0:
        return
    r = psi(ref, cur, min_n=1)
    assert r.value >= 0
    assert sum(r.contributions) == pytest.approx(r.value)
    same = psi(ref, ref, min_n=1)
    assert same.value == 0.0
    scaled = psi(ref, [3 * c for c in ref], min_n=1)  # same proportions, other n
    assert scaled.value == pytest.approx(0.0, abs=1e-12)


def test_merging_bucket_counts_equals_psi_of_the_merged_window():
    rng = np.random.default_rng(5)
    ref = rng.integers(0, 500, 10)
    buckets = [rng.integers(0, 500, 10) for _ in range(6)]
    merged = np.sum(buckets, axis=0)
    assert psi(ref, merged).value == psi(ref, merged.tolist()).value
    assert psi(ref, merged).value != psi(ref, buckets[0]).value
