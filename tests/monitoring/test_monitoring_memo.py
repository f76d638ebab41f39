"""The memo behind the costly pure functions (the exact two-sample KS, the ECE null): a hit
is the same computation's result, keyed by the arrays' content, so equal inputs give equal
results and a changed input is computed afresh."""

from __future__ import annotations

import numpy as np
from scipy import stats

from app.monitoring import drift, gates
from app.monitoring._memo import Memo, digest
from app.monitoring.drift import KS_MEMO, KsPoints, ks_from_counts


def test_a_memo_computes_once_per_key_and_keeps_the_last_ones():
    calls = []
    memo = Memo(2)
    for k in ("a", "b", "a", "c", "b"):
        memo.get(k, lambda k=k: calls.append(k) or k.upper())
    # "a" hit once; "b" evicted by "c" (size 2: a, c), so computed again
    assert calls == ["a", "b", "c", "b"] and memo.hits == 1 and memo.misses == 4


def test_the_digest_tells_content_dtype_and_shape_apart():
    a = np.arange(6, dtype=np.int64)
    assert digest(a) == digest(a.copy())
    assert digest(a) != digest(a.reshape(2, 3))
    assert digest(a) != digest(a.astype(np.float64))
    b = a.copy()
    b[3] = 7
    assert digest(a) != digest(b)


def test_ks_from_counts_memoised_equals_scipy_and_sees_a_changed_count():
    rng = np.random.default_rng(3)
    ref = rng.normal(size=800)
    cur = rng.normal(0.2, size=600)
    points = KsPoints.of(ref)
    slots, counts = points.slot_counts(np.sort(cur))
    dense = np.zeros(points.n_slots, dtype=np.int64)
    dense[slots] = counts
    KS_MEMO.clear()
    first = ks_from_counts(points, dense)
    again = ks_from_counts(points, dense.copy())
    assert KS_MEMO.hits == 1 and again == first
    want = stats.ks_2samp(ref, cur, method="auto")
    assert first.statistic == want.statistic and first.pvalue == want.pvalue
    dense[slots[0]] += 5  # five more values in one slot: another window
    other = ks_from_counts(points, dense)
    assert KS_MEMO.misses == 2 and other.n_cur == first.n_cur + 5
    assert other == drift.ks(ref, points.synthetic(dense))


def test_the_ece_null_memoised_is_the_seeded_draw():
    counts, conf = np.array([300, 0, 200]), np.array([0.1, 0.5, 0.7])
    gates.ECE_NULL_MEMO.clear()
    a = gates.ece_null_quantiles(counts, conf, [0.95, 0.99])
    a[0] = -1.0  # a caller's copy: the memo keeps its own
    b = gates.ece_null_quantiles(counts, conf, [0.95, 0.99])
    rng = np.random.default_rng(gates.ECE_NULL_SEED)
    c, p = np.array([300, 200]), np.array([0.1, 0.7])
    s = rng.binomial(c, p, size=(gates.ECE_NULL_DRAWS, 2))
    want = np.quantile(np.abs(s - c * p).sum(axis=1) / 500, [0.95, 0.99], method="higher")
    assert gates.ECE_NULL_MEMO.hits == 1 and b.tolist() == want.tolist()
