"""Counting a numeric column against its cut points without sorting it gives, count for
count, what the sorted counting gives (``NumericBinning.counts`` and ``KsPoints.slot_counts``
on ``sorted_sample``), and both equal a per-value np.searchsorted reference."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app.monitoring import KsPoints, NumericBinning, fit_numeric_bins, sorted_sample
from app.monitoring.slots import (
    MAX_CUTS_PER_CELL,
    ColumnsCounter,
    SlotCounter,
    column_counts,
    counts_unsorted,
)

SPECIALS = np.array([np.nan, np.inf, -np.inf, -0.0, 0.0, 5e-324, -5e-324, 1e308, -1e308,
                     np.finfo(np.float64).max, np.finfo(np.float64).min])


def reference_counts(binning: NumericBinning, ks: KsPoints,
                     x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each finite value's bin (right-closed) and KS slot by np.searchsorted, counted."""
    v = x[np.isfinite(x)]
    edges = np.asarray(binning.edges, dtype=np.float64)
    bins = np.bincount(np.searchsorted(edges, v, side="left"), minlength=binning.n_bins - 1)
    j = np.searchsorted(ks.points, v, side="left")
    at = (ks.points[np.minimum(j, max(ks.points.shape[0] - 1, 0))] == v
          if ks.points.shape[0] else np.zeros(v.shape[0], dtype=bool))
    slots = np.bincount(2 * j + at, minlength=ks.n_slots)
    return np.append(bins, x.shape[0] - v.shape[0]), slots


def sorted_counts(binning: NumericBinning, ks: KsPoints,
                  x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    s = sorted_sample(x)
    slots, n = ks.slot_counts(s.values)
    dense = np.zeros(ks.n_slots, dtype=np.int64)
    dense[slots] = n
    return binning.counts(s), dense


def check(binning: NumericBinning, ks: KsPoints, x: np.ndarray) -> None:
    counter = SlotCounter(binning, ks)
    assert counter.usable
    bins, slots = counter.counts(x)
    ref_bins, ref_slots = reference_counts(binning, ks, x)
    old_bins, old_slots = sorted_counts(binning, ks, x)
    assert bins.tolist() == ref_bins.tolist() == old_bins.tolist()
    assert slots.tolist() == ref_slots.tolist() == old_slots.tolist()
    new = column_counts(binning, ks, x, counter)
    old = column_counts(binning, ks, x)  # no counter: the values sorted once
    assert [(a.tolist(), b.tolist()) for a, b in new] == [(a.tolist(), b.tolist())
                                                          for a, b in old]


@pytest.mark.parametrize("sample_size", [10, 300, 3000])
def test_counts_equal_the_sorted_counting_with_ties_missing_and_extremes(sample_size: int):
    rng = np.random.default_rng(sample_size)
    ref = rng.normal(size=3000)
    binning = fit_numeric_bins(ref)
    # a subsample: the bin edges are then (mostly) not among the KS points
    ks = KsPoints.of(np.sort(ref)[np.linspace(0, 2999, sample_size).round().astype(int)])
    x = rng.normal(0.3, 1.5, 20000)
    x[:500] = rng.choice(ks.points, 500)  # at the points
    x[500:600] = rng.choice(np.asarray(binning.edges), 100)  # at the edges
    x[600:1700] = rng.choice(SPECIALS, 1100)
    x[1700:1800] = np.nextafter(x[:100], np.inf)  # just above a point
    check(binning, ks, rng.permutation(x))


def test_few_valued_and_constant_columns():
    rng = np.random.default_rng(3)
    for ref in (np.round(rng.normal(size=2000), 1), np.full(50, 2.5), rng.integers(0, 3, 900)):
        ref = ref.astype(np.float64)
        binning, ks = fit_numeric_bins(ref), KsPoints.of(ref)
        x = np.concatenate((rng.choice(ref, 3000), np.round(rng.normal(size=3000), 2),
                            SPECIALS))
        check(binning, ks, rng.permutation(x))


def test_a_reference_without_values_counts_every_finite_value_in_one_slot():
    binning, ks = fit_numeric_bins(np.array([np.nan, np.nan])), KsPoints.of(np.empty(0))
    x = np.array([1.0, np.nan, -3.0, np.inf, 0.0])
    bins, slots = SlotCounter(binning, ks).counts(x)
    assert bins.tolist() == [3, 2] and slots.tolist() == [3]
    check(binning, ks, x)


def test_cuts_crowded_into_one_cell_leave_the_column_to_the_sort():
    # a cluster of points a hair apart beside one far point: one cell holds the cluster
    ref = np.concatenate((1.0 + np.arange(MAX_CUTS_PER_CELL * 8) * 1e-12, [1e6]))
    binning, ks = fit_numeric_bins(ref), KsPoints.of(ref)
    counter = SlotCounter(binning, ks)
    assert not counter.usable
    x = np.concatenate((ref, [0.5, 2.0, np.nan]))
    (bins, n_bins), (slots, n_slots) = column_counts(binning, ks, x, counter)
    ref_bins, ref_slots = reference_counts(binning, ks, x)
    assert bins.tolist() == np.flatnonzero(ref_bins).tolist()
    assert n_bins.tolist() == ref_bins[ref_bins > 0].tolist()
    assert slots.tolist() == np.flatnonzero(ref_slots).tolist()
    assert n_slots.tolist() == ref_slots[ref_slots > 0].tolist()


def any_floats(min_size: int, max_size: int) -> st.SearchStrategy[list[float]]:
    """Lists of any float64, NaN and the infinities included."""
    return st.lists(st.floats(allow_nan=True, allow_infinity=True, width=64),
                    min_size=min_size, max_size=max_size)


@settings(max_examples=150, deadline=None)
@given(any_floats(1, 60), any_floats(0, 200), st.integers(1, 12))
def test_any_values_against_any_reference(ref, current, n_bins):
    ref_a = np.asarray(ref, dtype=np.float64)
    x = np.asarray(current + ref[:20], dtype=np.float64)  # some values at the points
    binning, ks = fit_numeric_bins(ref_a, n_bins), KsPoints.of(ref_a)
    counter = SlotCounter(binning, ks)
    if not counter.usable:  # the sort counts it; nothing to compare
        return
    check(binning, ks, x)


def test_a_column_is_counted_unsorted_from_2048_values_and_a_quarter_of_its_points():
    ks = KsPoints.of(np.arange(10000.0))
    assert not counts_unsorted(2048, ks) and not counts_unsorted(2499, ks)
    assert counts_unsorted(2500, ks)
    small = KsPoints.of(np.arange(500.0))
    assert not counts_unsorted(2047, small) and counts_unsorted(2048, small)
    assert not counts_unsorted(10**6, None)  # a categorical column


def counted_together(columns: list[tuple[NumericBinning, KsPoints]], x: np.ndarray
                     ) -> list[tuple[list[int], list[int]]]:
    """``ColumnsCounter`` on columns laid out one after another (with a gap), split back into
    each column's (dense bins, dense KS slots)."""
    layout, offset = [], 3
    for binning, ks in columns:
        layout.append((binning, ks, offset, offset + binning.n_bins))
        offset += binning.n_bins + ks.n_slots + 5
    keys, n = ColumnsCounter(layout).counts(x)
    assert keys.tolist() == sorted(set(keys.tolist())) and (n > 0).all()
    dense = np.zeros(offset, dtype=np.int64)
    dense[keys] = n
    return [(dense[po:po + b.n_bins].tolist(), dense[ko:ko + ks.n_slots].tolist())
            for b, ks, po, ko in layout]


def test_columns_counted_together_equal_each_column_counted_alone():
    """Three references of different scales and sizes; values at the points, at the edges,
    between them, missing, infinite, signed zeros and the extremes of float64."""
    rng = np.random.default_rng(11)
    refs = [rng.normal(size=3000), np.round(rng.exponential(5.0, 800)), rng.integers(0, 3, 50)]
    columns = []
    for ref in refs:
        ref = np.asarray(ref, dtype=np.float64)
        columns.append((fit_numeric_bins(ref), KsPoints.of(ref)))
    n = 400
    x = np.empty((len(columns), n))
    for c, (binning, ks) in enumerate(columns):
        pick = rng.random(n)
        x[c] = rng.normal(scale=3.0, size=n) * (c + 1)
        x[c] = np.where(pick < 0.3, rng.choice(ks.points, n), x[c])
        x[c] = np.where(pick > 0.8, rng.choice(np.asarray(binning.edges), n), x[c])
        x[c][: SPECIALS.shape[0]] = SPECIALS
    got = counted_together(columns, x)
    for c, (binning, ks) in enumerate(columns):
        want_bins, want_slots = reference_counts(binning, ks, x[c])
        old_bins, old_slots = sorted_counts(binning, ks, x[c])
        assert got[c][0] == want_bins.tolist() == old_bins.tolist()
        assert got[c][1] == want_slots.tolist() == old_slots.tolist()


@settings(max_examples=100, deadline=None)
@given(any_floats(1, 60), any_floats(1, 40), st.integers(1, 12))
def test_any_columns_counted_together(ref, current, n_bins):
    ref_a = np.asarray(ref, dtype=np.float64)
    ks = KsPoints.of(ref_a)
    if ks.points.shape[0] == 0:  # no finite reference value: such a column is counted alone
        with pytest.raises(ValueError, match="at least one KS point"):
            ColumnsCounter([(fit_numeric_bins(ref_a, n_bins), ks, 0, 0)])
        return
    columns = [(fit_numeric_bins(ref_a, n_bins), ks), (fit_numeric_bins(-ref_a, n_bins),
                                                       KsPoints.of(-ref_a))]
    row = np.asarray(current + ref[:20], dtype=np.float64)
    x = np.stack((row, row[::-1]))
    got = counted_together(columns, x)
    for c, (binning, k) in enumerate(columns):
        want_bins, want_slots = reference_counts(binning, k, x[c])
        assert got[c] == (want_bins.tolist(), want_slots.tolist())
