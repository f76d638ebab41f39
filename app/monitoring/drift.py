"""Population stability index and two-sample Kolmogorov-Smirnov (their corrections across
features: corrections.py).

PSI works on per-bin counts, not raw values: the service stores counts per time bucket and
merges them, and any window can then be compared with the reference without the rows.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy
from scipy import stats

from app.monitoring import ks_exact
from app.monitoring._memo import Memo, Shared, digest, digest_of
from app.monitoring._result import INSUFFICIENT_DATA, INVALID_INPUT, OK, JsonResult
from app.monitoring.binning import (
    SortedSample,
    sorted_sample,
)

PSI_EPS = 1e-4
DEFAULT_MIN_N = 100
KS_D_THRESHOLD = 0.1
KS_ALPHA = 0.05
# scipy.stats.ks_2samp(method="auto") is exact up to this sample size, asymptotic above.
_SCIPY_MAX_AUTO_N = 10000

def _ks_encode(r: KsResult) -> str:
    return json.dumps(dataclasses.asdict(r))  # floats as repr: they come back bit for bit


def _ks_decode(raw: str) -> KsResult:
    return KsResult(**json.loads(raw))


@dataclass(frozen=True)
class PsiThresholds(JsonResult):
    """Bands: value < moderate is stable, moderate..major (inclusive) moderate, > major major."""

    moderate: float = 0.1
    major: float = 0.25

    def band(self, value: float) -> str:
        if value < self.moderate:
            return "stable"
        if value <= self.major:
            return "moderate"
        return "major"


@dataclass(frozen=True)
class PsiResult(JsonResult):
    status: str
    reason: str
    value: float | None
    band: str | None
    n_ref: int
    n_cur: int
    eps: float
    ref_proportions: tuple[float, ...] = ()
    cur_proportions: tuple[float, ...] = ()
    contributions: tuple[float, ...] = ()


def _counts_vector(counts: Any) -> np.ndarray | None:
    c = np.asarray(counts, dtype=np.float64).reshape(-1)
    if c.size == 0 or not np.all(np.isfinite(c)) or np.any(c < 0):
        return None
    return c


def psi(
    ref_counts: Any,
    cur_counts: Any,
    eps: float = PSI_EPS,
    *,
    thresholds: PsiThresholds | None = None,
    min_n: int = DEFAULT_MIN_N,
) -> PsiResult:
    """PSI = sum (a - e) ln(a / e) over bins, proportions floored at ``eps``, not renormalised.

    Flooring (p -> max(p, eps)) keeps an empty bin from producing an infinite term, and every
    term stays >= 0 because (a - e) and ln(a / e) share a sign. Not renormalising afterwards
    matches the common reference implementations, so values are comparable with theirs.
    """
    thresholds = thresholds or PsiThresholds()
    e_c = _counts_vector(ref_counts)
    a_c = _counts_vector(cur_counts)
    if e_c is None or a_c is None or e_c.shape != a_c.shape:
        return PsiResult(
            status=INVALID_INPUT,
            reason="counts must be non-empty, finite, non-negative and of equal length",
            value=None, band=None, n_ref=0, n_cur=0, eps=eps,
        )
    n_ref, n_cur = int(round(e_c.sum())), int(round(a_c.sum()))
    need = max(int(min_n), 1)
    if n_ref < need or n_cur < need:
        return PsiResult(
            status=INSUFFICIENT_DATA,
            reason=f"insufficient data: reference n={n_ref}, current n={n_cur}, minimum {need}",
            value=None, band=None, n_ref=n_ref, n_cur=n_cur, eps=eps,
        )
    e = e_c / e_c.sum()
    a = a_c / a_c.sum()
    ef = np.maximum(e, eps)
    af = np.maximum(a, eps)
    contrib = (af - ef) * np.log(af / ef)
    value = float(contrib.sum())
    return PsiResult(
        status=OK, reason="", value=value, band=thresholds.band(value),
        n_ref=n_ref, n_cur=n_cur, eps=eps,
        ref_proportions=tuple(e.tolist()), cur_proportions=tuple(a.tolist()),
        contributions=tuple(contrib.tolist()),
    )


@dataclass(frozen=True)
class KsResult(JsonResult):
    """Two-sample KS. ``drift`` needs both an effect (D > d_threshold) and significance.

    With the adjusted p-value when a correction across features has been applied.
    """

    status: str
    reason: str
    statistic: float | None
    pvalue: float | None
    method: str | None
    n_ref: int
    n_cur: int
    n_ref_missing: int
    n_cur_missing: int
    d_threshold: float
    alpha: float
    drift: bool | None
    pvalue_bound: float | None = None
    pvalue_adjusted: float | None = None
    correction: str | None = None


# Exact two-sample results by (sample, slot counts, knobs); shared between the service and
# the scheduler where the caller opens a store (the figure depends on scipy's version).
KS_MEMO = Memo(4096, Shared(f"ks_from_counts/scipy-{scipy.__version__}/1", _ks_encode,
                            _ks_decode))


def ks_statistic(ref_sorted: np.ndarray, cur_sorted: np.ndarray) -> float:
    """D = sup |F_ref - F_cur|, equal bit for bit to scipy.stats.ks_2samp's statistic.

    Both inputs must be sorted and non-empty. Rather than evaluating both ECDFs at all
    n1 + n2 points (two searches of the concatenation), it looks only from the reference
    side: F_ref - F_cur can only rise at reference points, and F_cur - F_ref peaks at the
    last current point before a reference point, whose counts are those just left of it.
    Each candidate is computed with scipy's integers and divisions, so the maximum is the
    same float. Within runs of ties the candidates are never larger than the true value at
    that point, which is also among them.
    """
    n1 = ref_sorted.shape[0]
    n2 = cur_sorted.shape[0]
    right = np.searchsorted(cur_sorted, ref_sorted, side="right")
    below = cur_sorted[np.maximum(right - 1, 0)]
    tied = np.flatnonzero((right > 0) & (below == ref_sorted))
    if tied.size:
        left = right.copy()
        left[tied] = np.searchsorted(cur_sorted, ref_sorted[tied], side="left")
    else:
        left = right
    # Counts as float64 are exact (< 2**53), so c / n equals scipy's int64 / n bit for bit.
    cdf1 = np.arange(1, n1 + 1, dtype=np.float64)
    cdf1 /= n1
    tmp = np.divide(right, n2, dtype=np.float64)
    np.subtract(cdf1, tmp, out=tmp)
    plus = float(tmp.max())
    cdf1 = np.arange(n1, dtype=np.float64)
    cdf1 /= n1
    np.divide(left, n2, out=tmp)
    np.subtract(tmp, cdf1, out=tmp)
    minus = float(tmp.max())
    minus = min(max(minus, 0.0), 1.0)
    return minus if minus > plus else plus


def _effective_n(n1: int, n2: int) -> float:
    # scipy's two-sided asymptotic branch, same operations in the same order.
    m, n = sorted([float(n1), float(n2)], reverse=True)
    return float(np.round(m * n / (m + n)))


@functools.lru_cache(maxsize=4096)
def _ks_asymptotic_pvalue(d: float, en: float) -> float:
    """scipy's asymptotic p-value, memoised in the process: about 1 ms a feature at a few
    thousand effective values, which a page over a long window paid on every view."""
    return float(np.clip(stats.kstwo.sf(d, en), 0, 1))


def _costly_pvalue(d: float, en: float) -> bool:
    """True where scipy's kstwo.sf sums an O(n) Smirnov series (~1 us per unit of n).

    That is 2.2 <= n d^2 < 370 with d < 0.5: small but 'significant' shifts in large
    windows, about 0.7 s per feature at 1M x 1M rows.
    """
    return en > 20000 and d < 0.5 and 2.2 <= en * d * d < 370.0


def ks(
    ref: np.ndarray | SortedSample,
    cur: np.ndarray | SortedSample,
    *,
    d_threshold: float = KS_D_THRESHOLD,
    alpha: float = KS_ALPHA,
    min_n: int = DEFAULT_MIN_N,
    exact_pvalue: bool = True,
) -> KsResult:
    """Two-sided KS identical to scipy.stats.ks_2samp(method='auto'), missing values ignored.

    Large samples make tiny, harmless shifts 'significant', so the drift decision also
    requires D above ``d_threshold``; the p-value alone never pages anyone.

    With ``exact_pvalue=False`` the p-value is skipped only where it cannot change the
    decision (D <= d_threshold) and scipy would need its slow O(n) series: ``pvalue`` is
    then None and ``pvalue_bound`` = min(1, 2 exp(-2 n_e D^2)) >= scipy's value
    (Dvoretzky-Kiefer-Wolfowitz-Massart), n_e = round(n1 n2 / (n1 + n2)).
    """
    rs = sorted_sample(ref)
    cs = sorted_sample(cur)
    n1, n2 = rs.n_valid, cs.n_valid
    base = dict(
        n_ref=n1, n_cur=n2, n_ref_missing=rs.n_missing, n_cur_missing=cs.n_missing,
        d_threshold=d_threshold, alpha=alpha,
    )
    if min(n1, n2) < max(int(min_n), 1):
        return _ks_insufficient(base, min_n)
    if max(n1, n2) <= _SCIPY_MAX_AUTO_N:
        if ks_exact.available():
            e = ks_exact.exact_pvalue(n1, n2, ks_statistic(rs.values, cs.values))
        else:
            e = _exact_by_ks_2samp(rs.values, cs.values)
        return _ks_exact(e, base)
    return _ks_large(ks_statistic(rs.values, cs.values), base, exact_pvalue)


def _exact_by_ks_2samp(ref: np.ndarray, cur: np.ndarray) -> ks_exact.ExactP:
    """scipy's exact attempt through ``ks_2samp`` itself (a scipy without the direct one),
    its fallback to the asymptotic p-value read from the warning it raises."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        res = stats.ks_2samp(ref, cur, alternative="two-sided", method="auto")
    fell_back = any("Switching to" in str(w.message) for w in caught)
    return ks_exact.ExactP(not fell_back, float(res.statistic), float(res.pvalue))


def _ks_exact(e: ks_exact.ExactP, base: dict[str, Any]) -> KsResult:
    """The result of scipy's exact path: its p-value, or where it gave up, the asymptotic
    p-value of the snapped D, as ``ks_2samp`` then reports."""
    d, p, method, reason = e.statistic, e.pvalue, "exact", ""
    if not e.ok:
        p = _ks_asymptotic_pvalue(d, _effective_n(base["n_ref"], base["n_cur"]))
        method = "asymp"
        reason = "exact p-value unavailable; scipy fell back to the asymptotic one"
    return KsResult(
        status=OK, reason=reason, statistic=d, pvalue=p, pvalue_bound=p, method=method,
        drift=bool(d > base["d_threshold"] and p < base["alpha"]), **base,
    )


def _ks_insufficient(base: dict[str, Any], min_n: int) -> KsResult:
    need = max(int(min_n), 1)
    return KsResult(
        status=INSUFFICIENT_DATA,
        reason=(
            f"insufficient data: reference n={base['n_ref']}, current n={base['n_cur']} "
            f"non-missing values, minimum {need}"
        ),
        statistic=None, pvalue=None, method=None, drift=None, **base,
    )


def _ks_large(d: float, base: dict[str, Any], exact_pvalue: bool) -> KsResult:
    """The asymptotic branch scipy takes when either sample exceeds its exact limit."""
    en = _effective_n(base["n_ref"], base["n_cur"])
    d_threshold, alpha = base["d_threshold"], base["alpha"]
    if not exact_pvalue and d <= d_threshold and _costly_pvalue(d, en):
        bound = min(1.0, 2.0 * float(np.exp(-2.0 * en * d * d)))
        return KsResult(
            status=OK,
            reason="p-value not computed: D is below the effect threshold, so the "
            "decision is no drift whatever its value; pvalue_bound is an upper bound",
            statistic=d, pvalue=None, pvalue_bound=bound, method="asymp", drift=False,
            **base,
        )
    p = _ks_asymptotic_pvalue(d, en)
    return KsResult(
        status=OK, reason="", statistic=d, pvalue=p, pvalue_bound=p, method="asymp",
        drift=bool(d > d_threshold and p < alpha), **base,
    )


@dataclass(frozen=True)
class KsPoints:
    """The distinct points of a sorted reference sample and its ECDF numerator at each.

    Between two consecutive points the reference ECDF is constant, so the counts of current
    values equal to each point and strictly between consecutive points (2J + 1 slots:
    below the first, at it, between the first and second, ..., above the last) determine the
    two-sample KS statistic against that sample exactly. Such counts add up across time
    buckets, which is what lets a window of any length be tested without its raw values.
    """

    sample: np.ndarray   # the sorted reference sample (finite values)
    points: np.ndarray   # distinct values of the sample, ascending
    ref_cum: np.ndarray  # number of sample values <= each point

    @classmethod
    def of(cls, sample: Any) -> KsPoints:
        s = sorted_sample(sample).values
        points = np.unique(s)
        return cls(sample=s, points=points,
                   ref_cum=np.searchsorted(s, points, side="right").astype(np.int64))

    @property
    def n_slots(self) -> int:
        return 2 * int(self.points.shape[0]) + 1

    def slots(self, values: np.ndarray) -> np.ndarray:
        """Slot of each finite value: 2j + 1 when equal to point j, 2j when strictly
        between point j - 1 and point j (j = 0: below the first; j = J: above the last)."""
        j = np.searchsorted(self.points, values, side="left")
        if self.points.shape[0] == 0:
            return j * 2
        at = self.points[np.minimum(j, self.points.shape[0] - 1)] == values
        return 2 * j + at

    def slot_counts(self, sorted_values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(slots, counts) of the non-zero slots of finite values given in ascending order.
        Few values: each value's slot, then runs; many: the points located among the values
        (J log n instead of n log J), then the gaps between them."""
        x = sorted_values
        p = self.points
        if x.shape[0] * 4 < p.shape[0] or p.shape[0] == 0:
            s = self.slots(x)
            if s.size == 0:
                return s.astype(np.int64), np.zeros(0, dtype=np.int64)
            first = np.empty(s.size, dtype=bool)  # where a run of one slot begins
            first[0] = True
            np.not_equal(s[1:], s[:-1], out=first[1:])
            starts = np.flatnonzero(first)
            runs = np.empty(starts.size, dtype=np.int64)
            np.subtract(starts[1:], starts[:-1], out=runs[:-1])
            runs[-1] = s.size - starts[-1]
            return s[starts].astype(np.int64), runs
        left = np.searchsorted(x, p, side="left")
        right = np.searchsorted(x, p, side="right")
        dense = np.empty(self.n_slots, dtype=np.int64)
        dense[1::2] = right - left
        dense[0:-1:2] = left - np.concatenate(([0], right[:-1]))
        dense[-1] = x.shape[0] - right[-1]
        nz = np.flatnonzero(dense)
        return nz, dense[nz]

    def synthetic(self, slot_counts: np.ndarray) -> np.ndarray:
        """A sorted sample with the given slot counts: the same ranks against the reference
        points as any sample with these counts, so every rank statistic is equal."""
        p = self.points
        reps = np.empty(self.n_slots, dtype=np.float64)
        reps[1::2] = p
        if p.shape[0]:
            reps[0] = np.nextafter(p[0], -np.inf)
            reps[2::2] = np.nextafter(p, np.inf)  # strictly above point j (and below j + 1
            # whenever a value can lie between them at all)
        else:
            reps[0] = 0.0
        return np.repeat(reps, np.asarray(slot_counts, dtype=np.int64))


def ks_statistic_from_counts(points: KsPoints, slot_counts: np.ndarray) -> float:
    """D = sup |F_ref - F_cur| from slot counts, equal bit for bit to scipy's.

    scipy evaluates both ECDFs at every point of both samples. F_ref - F_cur is largest at
    a reference point (F_cur can only have grown since), and F_cur - F_ref at the largest
    current value below a reference point, where F_cur counts everything left of that point.
    Each candidate is one of scipy's own differences, computed with the same divisions.
    """
    c = np.asarray(slot_counts, dtype=np.int64)
    n1 = int(points.sample.shape[0])
    n2 = int(c.sum())
    cum = np.cumsum(c)
    at_point = cum[1::2]                       # current values <= point j
    below_point = cum[0::2]                    # current values < point j (j = 0..J)
    ref_at = points.ref_cum                    # reference values <= point j
    ref_before = np.concatenate(([0], ref_at))  # reference values < point j (j = 0..J)
    plus = np.divide(ref_at, n1, dtype=np.float64) - np.divide(at_point, n2, dtype=np.float64)
    minus = (np.divide(below_point, n2, dtype=np.float64)
             - np.divide(ref_before, n1, dtype=np.float64))
    d_plus = float(plus.max()) if plus.size else 0.0
    d_minus = min(max(float(minus.max()), 0.0), 1.0)
    return d_minus if d_minus > d_plus else d_plus


@dataclass(frozen=True)
class KsCounts:
    """One ``ks_from_counts`` question: a reference's points, the current values' slot
    counts and the knobs."""

    points: KsPoints
    slot_counts: Any
    n_cur_missing: int = 0
    d_threshold: float = KS_D_THRESHOLD
    alpha: float = KS_ALPHA
    min_n: int = DEFAULT_MIN_N
    exact_pvalue: bool = True


def ks_from_counts(points: KsPoints, slot_counts: Any, **knobs: Any) -> KsResult:
    """``ks(points.sample, current)`` computed from the current values' slot counts alone
    (knobs as ``KsCounts``'s).

    Where scipy's exact p-value applies (both samples up to its limit) it is scipy's exact
    attempt on the two sizes and D, which the counts determine; above, D comes from the
    counts and the p-value from D and the two sizes, as in ``ks``.
    """
    return ks_from_counts_many([KsCounts(points, slot_counts, **knobs)])[0]


def ks_from_counts_many(questions: Sequence[KsCounts]) -> list[KsResult]:
    """``ks_from_counts`` of each question; the exact p-values not memoised yet are computed
    together, in parallel (ks_exact.exact_pvalues)."""
    out: list[KsResult | None] = [None] * len(questions)
    exact: dict[int, tuple[Any, np.ndarray, dict[str, Any]]] = {}
    for i, q in enumerate(questions):
        c = np.asarray(q.slot_counts, dtype=np.int64)
        n1, n2 = int(q.points.sample.shape[0]), int(c.sum())
        base = dict(n_ref=n1, n_cur=n2, n_ref_missing=0, n_cur_missing=int(q.n_cur_missing),
                    d_threshold=q.d_threshold, alpha=q.alpha)
        if min(n1, n2) < max(int(q.min_n), 1):
            out[i] = _ks_insufficient(base, q.min_n)
        elif max(n1, n2) > _SCIPY_MAX_AUTO_N:
            out[i] = _ks_large(ks_statistic_from_counts(q.points, c), base, q.exact_pvalue)
        else:
            # scipy's exact p-value costs O(n1 n2 D) each time: the same sample and counts
            # (one window shown on a page, in its REST report and by the job) are computed
            # once
            key = (digest_of(q.points, q.points.sample), digest(c), q.d_threshold, q.alpha,
                   q.min_n, q.exact_pvalue)
            exact[i] = (key, c, {**base, "n_cur_missing": 0})
    by_key = {key: (questions[i], c, base) for i, (key, c, base) in exact.items()}
    found = KS_MEMO.get_many([key for key, _, _ in exact.values()],
                             lambda keys: _exact_results([by_key[k] for k in keys]))
    for (i, _), r in zip(exact.items(), found, strict=True):
        out[i] = dataclasses.replace(r, n_cur_missing=int(questions[i].n_cur_missing))
    return [r for r in out if r is not None]


def _exact_results(todo: list[tuple[KsCounts, np.ndarray, dict[str, Any]]]) -> list[KsResult]:
    if not ks_exact.available():
        return [ks(q.points.sample, q.points.synthetic(c), d_threshold=q.d_threshold,
                   alpha=q.alpha, min_n=q.min_n, exact_pvalue=q.exact_pvalue)
                for q, c, _ in todo]
    found = ks_exact.exact_pvalues([(b["n_ref"], b["n_cur"], ks_statistic_from_counts(q.points, c))
                                    for q, c, b in todo])
    return [_ks_exact(e, b) for e, (_, _, b) in zip(found, todo, strict=True)]


__all__ = [
    "DEFAULT_MIN_N",
    "KsPoints",
    "KsResult",
    "PSI_EPS",
    "PsiResult",
    "PsiThresholds",
    "ks",
    "KsCounts",
    "ks_from_counts",
    "ks_from_counts_many",
    "ks_statistic",
    "ks_statistic_from_counts",
    "psi",
]
