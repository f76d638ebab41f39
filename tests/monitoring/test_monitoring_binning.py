import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from monitoring_testutil import assert_json_safe

from app.monitoring import (
    CategoricalBinning,
    NumericBinning,
    binning_from_dict,
    fit_categorical_bins,
    fit_numeric_bins,
    missing_rate,
    psi,
    sorted_sample,
)
from app.monitoring.binning import sorted_quantiles


def test_edges_are_reference_deciles_from_np_quantile():
    rng = np.random.default_rng(1)
    ref = rng.lognormal(size=5001)
    b = fit_numeric_bins(ref)
    expected = np.quantile(ref, np.arange(1, 10) / 10, method="inverted_cdf")
    assert np.array_equal(np.asarray(b.edges), expected)
    assert b.n_bins == 11  # 10 value bins + missing


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.floats(-1e6, 1e6, allow_nan=False), min_size=1, max_size=300),
    st.integers(2, 25),
)
def test_sorted_quantiles_identical_to_numpy(values, n_bins):
    x = np.sort(np.asarray(values))
    probs = np.arange(1, n_bins) / n_bins
    expected = np.quantile(x, probs, method="inverted_cdf")
    assert np.array_equal(sorted_quantiles(x, probs), expected)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.sampled_from([-2.5, 0.0, 1.0, 7.0]), min_size=1, max_size=400),
       st.integers(2, 30))
def test_no_empty_reference_bin_and_at_most_k_bins(values, n_bins):
    ref = np.asarray(values)
    b = fit_numeric_bins(ref, n_bins)
    counts = b.counts(ref)[:-1]
    assert len(counts) <= min(len(np.unique(ref)), n_bins)
    assert np.all(counts > 0)


def test_three_distinct_values_give_at_most_three_bins():
    ref = np.repeat([1.0, 2.0, 3.0], [50, 30, 20])
    b = fit_numeric_bins(ref, n_bins=10)
    assert len(b.edges) + 1 <= 3
    counts = b.counts(ref)
    assert counts[:-1].tolist() == [50, 30, 20]  # every reference bin is non-empty


def test_a_few_valued_feature_gets_one_bin_per_value():
    # deciles alone would give edges (0, 3) minus the maximum: 1 and 2 merged with 3, so mass
    # moving from 3 to 1 would not move PSI at all
    ref = np.repeat([0.0, 1.0, 2.0, 3.0], [50, 2, 2, 46])
    b = fit_numeric_bins(ref, 10)
    assert b.edges == (0.0, 1.0, 2.0)
    assert b.counts(ref).tolist() == [50, 2, 2, 46, 0]
    moved = np.repeat([0.0, 1.0, 2.0, 3.0], [50, 40, 2, 8])
    assert psi(b.counts(ref), b.counts(moved)).value > 1
    # more distinct values than bins: quantile edges as before
    assert len(fit_numeric_bins(np.arange(100.0), 10).edges) == 9


def test_constant_feature_has_a_single_value_bin():
    b = fit_numeric_bins(np.full(500, 7.0))
    assert b.edges == ()
    assert b.counts(np.array([1.0, 7.0, 1e9, np.nan])).tolist() == [3, 1]


def test_right_closed_bins_and_open_outer_bins():
    b = NumericBinning(edges=(0.0, 1.0))
    counts = b.counts(np.array([-1e300, -0.5, 0.0, 0.5, 1.0, 1.0000001, 1e300]))
    # (-inf,0] gets -1e300,-0.5,0.0 ; (0,1] gets 0.5,1.0 ; (1,inf) the rest ; missing 0
    assert counts.tolist() == [3, 2, 2, 0]


def test_sorted_and_unsorted_counting_agree():
    rng = np.random.default_rng(2)
    ref = rng.normal(size=2000)
    cur = np.concatenate([rng.normal(0.3, size=3000), [np.nan] * 40, [np.inf, -np.inf]])
    rng.shuffle(cur)
    b = fit_numeric_bins(ref)
    assert np.array_equal(b.counts(cur), b.counts(sorted_sample(cur)))
    assert b.counts(cur)[-1] == 42  # NaN and +/-inf are missing


def test_missing_bin_and_rate():
    ref = np.array([1.0, 2.0, np.nan, 3.0, None], dtype=object)
    b = fit_numeric_bins(ref)
    c = b.counts(ref)
    assert c[-1] == 2
    assert missing_rate(c) == pytest.approx(2 / 5)
    assert missing_rate(np.zeros(3)) is None


def test_all_missing_reference_gives_one_value_bin_and_full_missing_rate():
    b = fit_numeric_bins(np.full(200, np.nan))
    assert b.edges == ()
    c = b.counts(np.full(200, np.nan))
    assert c.tolist() == [0, 200]
    assert missing_rate(c) == 1.0


def test_categorical_unseen_and_missing_bins():
    ref = np.array(["a", "b", "b", "c", None], dtype=object)
    b = fit_categorical_bins(ref)
    assert b.categories == ("a", "b", "c")
    cur = np.array(["b", "z", "y", None, float("nan"), "a"], dtype=object)
    assert b.counts(cur).tolist() == [1, 1, 0, 2, 2]  # a, b, c, unseen, missing
    assert b.labels() == ("a", "b", "c", "(unseen)", "missing")


def test_categorical_max_categories_keeps_most_frequent():
    ref = np.array(["x"] * 5 + ["y"] * 3 + ["z"] * 1 + ["w"] * 3, dtype=object)
    b = fit_categorical_bins(ref, max_categories=2)
    assert b.categories == ("w", "x")  # w beats y (both 3) on the name tie-break
    assert b.counts(ref).tolist() == [3, 5, 4, 0]


def test_categorical_integer_codes():
    b = fit_categorical_bins(np.array([3, 1, 1, 2]))
    assert b.categories == ("1", "2", "3")
    assert b.counts(np.array([1, 1, 4])).tolist() == [2, 0, 0, 1, 0]


@pytest.mark.parametrize("kind", ["numeric", "categorical"])
def test_round_trip_gives_identical_psi(kind):
    rng = np.random.default_rng(3)
    if kind == "numeric":
        ref, cur = rng.normal(size=4000), rng.normal(0.2, 1.1, size=3000)
        b = fit_numeric_bins(ref, n_bins=12)
    else:
        ref = rng.choice(np.array(["a", "b", "c", "d"], dtype=object), 4000)
        cur = rng.choice(np.array(["a", "b", "e", None], dtype=object), 3000)
        b = fit_categorical_bins(ref)
    stored = json.loads(json.dumps(assert_json_safe(b)))
    b2 = binning_from_dict(stored)
    assert b2 == b
    p1 = psi(b.counts(ref), b.counts(cur))
    p2 = psi(b2.counts(ref), b2.counts(cur))
    assert p1.value == p2.value and p1.value > 0


def test_from_dict_rejects_bad_edges_and_kinds():
    with pytest.raises(ValueError):
        NumericBinning.from_dict({"kind": "numeric", "edges": [2.0, 1.0]})
    with pytest.raises(ValueError):
        binning_from_dict({"kind": "histogram"})
    with pytest.raises(ValueError):
        CategoricalBinning.from_dict({"kind": "categorical", "categories": ["a", "a"]})


@given(st.lists(st.one_of(st.none(), st.sampled_from(["DE", "FR", "", "é", "Z", "a b"]),
                          st.text(max_size=4)), max_size=300))
@settings(max_examples=150, deadline=None)
def test_string_columns_grouped_by_dict_as_by_sorting(values):
    """The dict grouping of a str/None column (what ingest decodes) gives exactly what
    sorting the column with np.unique gives: keys in order, counts, per-row codes."""
    from app.monitoring.binning import categorical_codes

    col = np.array(values + [None], dtype=object)[:-1]  # always an object column
    keys, counts, codes = categorical_codes(col)
    present = [v for v in values if v is not None]
    uniq, inv = np.unique(np.array(present, dtype=object), return_inverse=True)
    assert keys == [str(u) for u in uniq]
    assert counts.tolist() == np.bincount(inv.reshape(-1), minlength=len(uniq)).tolist()
    expected = np.full(len(values), -1)
    expected[[i for i, v in enumerate(values) if v is not None]] = inv.reshape(-1)
    assert codes.tolist() == expected.tolist()


def test_mixed_object_columns_still_group_by_string_form():
    from app.monitoring.binning import categorical_codes

    keys, counts, codes = categorical_codes(np.array(["1", 1, None, float("nan"), "b"],
                                                     dtype=object))
    assert codes[2] == -1 and codes[3] == -1
    assert sorted(keys) == keys and set(keys) == {"1", "b"} and counts.sum() == 3
