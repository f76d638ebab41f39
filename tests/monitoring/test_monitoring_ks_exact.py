"""scipy's exact two-sample KS p-value called directly (app/monitoring/ks_exact.py) and in
batches on threads: every statistic, p-value and method equal to scipy.stats.ks_2samp
(method="auto") bit for bit, on thousands of size and D combinations, the sizes scipy's
square method takes (n1 == n2), D = 0, and the case where scipy gives up on the exact value
and falls back to the asymptotic one."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from scipy import stats

from app.monitoring import OK, KsPoints, ks, ks_exact, ks_from_counts, ks_statistic
from app.monitoring import drift as drift_mod
from app.monitoring._memo import Memo, Shared, sharing
from app.monitoring.drift import KsCounts, ks_from_counts_many

# Equal sizes and D = 2/2809: scipy's square method returns 1.0000000000000002, so ks_2samp
# warns and reports the asymptotic p-value instead.
FALLBACK_N = 2809


def _scipy(a: np.ndarray, b: np.ndarray) -> tuple[float, float, str]:
    """ks_2samp(method="auto")'s statistic, p-value and the path it took."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        r = stats.ks_2samp(a, b, method="auto")
    fell_back = any("Switching to" in str(w.message) for w in caught)
    exact = max(a.size, b.size) <= 10_000 and not fell_back
    return float(r.statistic), float(r.pvalue), "exact" if exact else "asymp"


def _pair(rng: np.random.Generator, i: int) -> tuple[np.ndarray, np.ndarray]:
    """Sizes from 1 to 1,500 (equal in one case of five), shifts from none to disjoint,
    continuous and heavily tied values, and equal ECDFs (D = 0)."""
    if i % 7 == 0:
        base = rng.normal(size=int(rng.integers(1, 40)))
        return (np.tile(base, int(rng.integers(1, 30 if i % 5 else 2))),
                np.tile(base, int(rng.integers(1, 30)) if i % 5 else 1))
    n1 = int(rng.integers(1, 1500))
    n2 = n1 if i % 5 == 0 else int(rng.integers(1, 1500))
    shift = (0.0, 0.05, 0.2, 0.6, 3.0)[i % 5 - 1 if i % 5 else int(rng.integers(0, 5))]
    a, b = rng.normal(size=n1), rng.normal(shift, size=n2)
    if i % 3 == 0:
        a, b = np.round(a, 1), np.round(b, 1)
    return a, b


def _fallback_pair() -> tuple[np.ndarray, np.ndarray]:
    a = np.arange(float(FALLBACK_N))
    return a, a + 1.5  # F_a - F_b = 2/n at most: h = 2 on scipy's lattice


def test_the_direct_exact_attempt_is_usable_with_this_scipy():
    assert ks_exact.available()


def test_exact_pvalue_equals_ks_2samp_on_thousands_of_cases():
    rng = np.random.default_rng(2026)
    paths = set()
    for i in range(2500):
        a, b = _pair(rng, i)
        d_raw = ks_statistic(np.sort(a), np.sort(b))
        got = ks_exact.exact_pvalue(a.size, b.size, d_raw)
        want = _scipy(a, b)
        assert got.ok and (got.statistic, got.pvalue) == want[:2], (i, a.size, b.size)
        paths.add(("square" if a.size == b.size else "inside", d_raw == 0.0))
    assert paths == {("square", False), ("inside", False), ("square", True),
                     ("inside", True)}


@pytest.mark.parametrize(("n1", "n2", "shift"), [
    (5000, 6000, 0.0), (5000, 6000, 0.1), (5000, 6000, 0.5), (6000, 5000, 0.3),
    (10_000, 9999, 0.02), (4000, 4000, 0.15), (7, 10_000, 1.0), (10_000, 10_000, 0.01),
])
def test_exact_pvalue_equals_ks_2samp_at_a_pages_sizes(n1, n2, shift):
    rng = np.random.default_rng(n1 * 7 + n2)
    a, b = np.round(rng.normal(size=n1), 5), np.round(rng.normal(shift, size=n2), 5)
    got = ks(a, b, min_n=1)
    want = _scipy(a, b)
    assert (got.statistic, got.pvalue, got.method) == want
    e = ks_exact.exact_pvalue(n1, n2, ks_statistic(np.sort(a), np.sort(b)))
    assert (e.statistic, e.pvalue) == want[:2]


def test_where_scipy_gives_up_the_asymptotic_p_value_is_reported_as_it_does():
    a, b = _fallback_pair()
    want = _scipy(a, b)
    assert want[2] == "asymp" and want[0] == 2 / FALLBACK_N
    e = ks_exact.exact_pvalue(a.size, b.size, ks_statistic(a, b))
    assert not e.ok and e.statistic == want[0] and math.isnan(e.pvalue)
    r = ks(a, b, min_n=1)
    assert (r.statistic, r.pvalue, r.method) == want and "fell back" in r.reason
    points = KsPoints.of(a)
    counts = np.bincount(points.slots(b), minlength=points.n_slots)
    c = ks_from_counts(points, counts, min_n=1)
    assert (c.statistic, c.pvalue, c.method) == want and c.status == OK


def test_threads_give_the_same_floats_in_the_callers_order():
    rng = np.random.default_rng(5)
    cases = []
    for i in range(40):
        a, b = _pair(rng, i)
        cases.append((a.size, b.size, ks_statistic(np.sort(a), np.sort(b))))
    a, b = _fallback_pair()
    cases.insert(7, (a.size, b.size, ks_statistic(a, b)))
    alone = [ks_exact.exact_pvalue(*c) for c in cases]
    for threads in (1, 2, 3, None):
        got = ks_exact.exact_pvalues(cases, threads=threads)
        assert [(g.ok, g.statistic, repr(g.pvalue)) for g in got] == [
            (w.ok, w.statistic, repr(w.pvalue)) for w in alone]
    assert ks_exact.exact_pvalues([]) == []


def _questions(seed: int) -> tuple[list[KsCounts], list[tuple[np.ndarray, np.ndarray]]]:
    """Ten columns against two references: exact, beyond scipy's limit, too few, repeated."""
    rng = np.random.default_rng(seed)
    refs = [KsPoints.of(np.round(rng.normal(size=900), 2)), KsPoints.of(rng.normal(size=400))]
    out, raw = [], []
    for i in range(10):
        points = refs[i % 2]
        n = (700, 12_000, 50, 1200, 300)[i % 5]
        cur = np.round(rng.normal(0.1 * (i % 4), size=n), 2)
        counts = np.bincount(points.slots(cur), minlength=points.n_slots)
        out.append(KsCounts(points, counts, n_cur_missing=i, d_threshold=0.05, min_n=100))
        raw.append((points.sample, cur))
    out.append(out[3])  # the same question twice: computed once
    raw.append(raw[3])
    return out, raw


def test_a_batch_equals_one_question_at_a_time_and_scipy():
    questions, raw = _questions(8)
    drift_mod.KS_MEMO.clear()
    batch = ks_from_counts_many(questions)
    assert drift_mod.KS_MEMO.misses == 6  # six distinct exact questions, one asked twice
    drift_mod.KS_MEMO.clear()
    for q, r, (ref, cur) in zip(questions, batch, raw, strict=True):
        one = ks_from_counts(q.points, q.slot_counts, n_cur_missing=q.n_cur_missing,
                             d_threshold=q.d_threshold, min_n=q.min_n)
        assert one == r and r.n_cur_missing == q.n_cur_missing
        if r.status == OK:
            want = _scipy(ref, cur)
            assert (r.statistic, r.pvalue, r.method) == want
            assert r.drift == (r.statistic > 0.05 and r.pvalue < 0.05)
        else:
            assert r.n_cur < 100


def test_without_the_direct_attempt_every_figure_goes_through_ks_2samp(monkeypatch):
    questions, _ = _questions(9)
    drift_mod.KS_MEMO.clear()
    direct = ks_from_counts_many(questions)
    a, b = _fallback_pair()
    direct_ks = ks(a, b, min_n=1)
    monkeypatch.setattr(ks_exact, "_scipy_exact", lambda: None)
    assert not ks_exact.available()
    drift_mod.KS_MEMO.clear()
    assert ks_from_counts_many(questions) == direct
    assert ks(a, b, min_n=1) == direct_ks
    with pytest.raises(RuntimeError):
        ks_exact.exact_pvalue(10, 10, 0.5)


class DictStore:
    def __init__(self) -> None:
        self.data: dict[bytes, str] = {}
        self.reads = 0

    def get_many(self, keys):
        self.reads += 1
        return {k: self.data[k] for k in keys if k in self.data}

    def put(self, key: bytes, value: str) -> None:
        self.data[key] = value


def test_get_many_computes_the_missing_keys_once_in_one_call():
    calls: list[list[str]] = []

    def compute(keys):
        calls.append(list(keys))
        return [k.upper() for k in keys]

    memo = Memo(10)
    memo.get("a", lambda: "A")
    assert memo.get_many(["b", "a", "c", "b"], compute) == ["B", "A", "C", "B"]
    assert calls == [["b", "c"]] and memo.hits == 1 and memo.misses == 3
    assert memo.get_many(["c", "b"], compute) == ["C", "B"] and len(calls) == 1
    with pytest.raises(ValueError):
        memo.get_many(["x", "y"], lambda keys: ["X"])


def test_get_many_reads_the_shared_store_and_offers_it_what_it_computed():
    shared = Shared("test/1", str, str)
    store = DictStore()
    first = Memo(10, shared)
    with sharing(store):
        assert first.get_many(["a", "b"], lambda keys: [k * 2 for k in keys]) == ["aa", "bb"]
    assert len(store.data) == 2
    other = Memo(10, shared)  # another process: only the store in common
    with sharing(store):
        got = other.get_many(["b", "c", "a"], lambda keys: [k * 3 for k in keys])
    assert got == ["bb", "ccc", "aa"] and other.shared_hits == 2 and len(store.data) == 3
    assert store.reads == 2  # one read of the store a batch
