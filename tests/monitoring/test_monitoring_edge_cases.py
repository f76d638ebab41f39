"""Edge cases end to end: explicit statuses, never NaN/inf, never an escaping exception."""

import numpy as np
import pytest
from monitoring_testutil import assert_json_safe

from app.monitoring import (
    INSUFFICIENT_DATA,
    OK,
    KsPoints,
    fit_categorical_bins,
    fit_numeric_bins,
    ks_from_counts,
    missing_rate,
    psi,
)


class Drift:
    """PSI and KS of one numeric feature the way the service computes them: bin and slot
    counts of the current values against a binning and a KS sample of the reference."""

    def __init__(self, ref: np.ndarray, cur: np.ndarray, min_n: int = 100) -> None:
        binning = fit_numeric_bins(ref)
        rc, cc = binning.counts(ref), binning.counts(cur)
        points = KsPoints.of(ref)
        finite = cur[np.isfinite(cur)]
        self.ref_missing_rate, self.cur_missing_rate = missing_rate(rc), missing_rate(cc)
        self.psi = psi(rc, cc, min_n=min_n)
        self.ks = ks_from_counts(points, np.bincount(points.slots(finite),
                                                     minlength=points.n_slots),
                                 n_cur_missing=int(cc[-1]), min_n=min_n)


def numeric_drift(ref: np.ndarray, cur: np.ndarray, min_n: int = 100) -> Drift:
    return Drift(np.asarray(ref, dtype=float), np.asarray(cur, dtype=float), min_n)


def test_constant_feature_unchanged_and_moved():
    same = numeric_drift(np.full(1000, 3.0), np.full(800, 3.0))
    assert same.psi.value == 0.0 and same.psi.band == "stable"
    assert same.ks.statistic == 0.0 and same.ks.drift is False
    moved = numeric_drift(np.full(1000, 3.0), np.full(800, 4.0))
    # one value bin (-inf, +inf): a constant that moves stays in it, KS sees it
    assert moved.psi.value == 0.0 and moved.ks.statistic == 1.0 and moved.ks.drift is True
    assert_json_safe(moved.ks)


def test_all_missing_current_window():
    rng = np.random.default_rng(1)
    r = numeric_drift(rng.normal(size=1000), np.full(500, np.nan))
    assert r.cur_missing_rate == 1.0
    assert r.psi.status == OK and r.psi.band == "major"  # the missing bin moved 0 -> 1
    assert r.ks.status == INSUFFICIENT_DATA and r.ks.n_cur == 0 and r.ks.n_cur_missing == 500
    assert_json_safe(r.ks)


def test_all_missing_reference_and_current():
    r = numeric_drift(np.full(300, np.nan), np.full(300, np.nan))
    assert r.psi.value == 0.0 and r.ref_missing_rate == 1.0
    assert r.ks.status == INSUFFICIENT_DATA
    assert_json_safe(r.ks)


def test_empty_windows():
    r = numeric_drift(np.array([]), np.array([]))
    assert r.psi.status == INSUFFICIENT_DATA and r.ks.status == INSUFFICIENT_DATA
    assert r.ref_missing_rate is None
    assert_json_safe(r.psi)


@pytest.mark.parametrize("n", [0, 1, 99])
def test_too_small_current_window(n):
    rng = np.random.default_rng(2)
    r = numeric_drift(rng.normal(size=1000), rng.normal(size=n))
    assert r.psi.status == INSUFFICIENT_DATA and f"n={n}" in r.psi.reason
    assert r.ks.status == INSUFFICIENT_DATA and f"n={n}" in r.ks.reason
    ok = numeric_drift(rng.normal(size=1000), rng.normal(size=n), min_n=1) if n else None
    assert ok is None or ok.psi.status == OK


def test_categorical_drift_with_new_and_missing_categories():
    ref = np.array(["a"] * 500 + ["b"] * 500, dtype=object)
    cur = np.array(["a"] * 300 + ["c"] * 200 + [None] * 500, dtype=object)
    binning = fit_categorical_bins(ref)
    counts = binning.counts(cur)
    assert counts.tolist() == [300, 0, 200, 500]
    assert missing_rate(counts) == 0.5
    r = psi(binning.counts(ref), counts)
    assert r.band == "major"
    assert_json_safe(r)
