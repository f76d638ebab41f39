"""Error per cohort (segment), with Wilson intervals and a minimum-n rule.

A small cohort's error rate swings wildly by chance; marking it not decidable below
``min_n`` and carrying an interval keeps the report from paging on noise.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any, Literal

import numpy as np

from app.monitoring._result import INSUFFICIENT_DATA, INVALID_INPUT, OK, JsonResult
from app.monitoring.binning import categorical_codes

DEFAULT_COHORT_MIN_N = 100
Z_95 = 1.959963984540054

Task = Literal["binary", "multiclass", "regression"]


def wilson_interval(k: int, n: int, z: float = Z_95) -> tuple[float, float]:
    """Wilson score interval for k successes in n trials.

    centre = (p + z^2 / 2n) / (1 + z^2 / n)
    half   = z / (1 + z^2 / n) * sqrt(p (1 - p) / n + z^2 / 4n^2)
    Unlike the normal (Wald) interval it stays inside [0, 1] and is not degenerate at
    k = 0 or k = n. With n = 0 nothing is known and the interval is [0, 1].
    """
    if n < 0 or k < 0 or k > n:
        raise ValueError("need 0 <= k <= n")
    if n == 0:
        return 0.0, 1.0
    p = k / n
    z2 = z * z
    denom = 1.0 + z2 / n
    centre = (p + z2 / (2 * n)) / denom
    half = z / denom * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n))
    lo = 0.0 if k == 0 else max(0.0, min(p, centre - half))
    hi = 1.0 if k == n else min(1.0, max(p, centre + half))
    return lo, hi


def mean_interval(n: int, total: float, total_sq: float, z: float = Z_95
                  ) -> tuple[float, float]:
    """Normal (central limit) interval on the mean of non-negative values (absolute errors:
    an MAE) from their count, sum and sum of squares: mean ± z s / sqrt(n), s the sample
    standard deviation (ddof = 1), the lower end floored at 0. For n < 2 the spread is
    unknown and the interval is the point."""
    if n <= 0:
        raise ValueError("need n >= 1")
    mean = total / n
    var = max(total_sq - n * mean * mean, 0.0) / (n - 1) if n > 1 else 0.0
    half = z * math.sqrt(var / n)
    return max(0.0, mean - half), mean + half


@dataclass(frozen=True)
class CohortStat(JsonResult):
    """One cohort (or the overall row, cohort=None and is_overall=True).

    Rates: error_rate with its Wilson interval. Regression: mae and rmse. Deltas are
    cohort minus overall. ``worse_than_overall`` (rates only) is True when the cohort is
    decidable and its interval lies entirely above the overall rate.
    """

    cohort: str | None
    is_overall: bool
    n: int
    decidable: bool
    error_rate: float | None = None
    ci_low: float | None = None
    ci_high: float | None = None
    mae: float | None = None
    rmse: float | None = None
    delta_error_rate: float | None = None
    delta_mae: float | None = None
    delta_rmse: float | None = None
    worse_than_overall: bool | None = None


@dataclass(frozen=True)
class CohortReport(JsonResult):
    status: str
    reason: str
    task: str
    n: int
    n_dropped: int
    min_n: int
    threshold: float | None
    overall: CohortStat | None
    cohorts: tuple[CohortStat, ...] = ()


def _row_errors(
    task: str, predictions: Any, labels: Any, threshold: float
) -> tuple[np.ndarray, np.ndarray, str]:
    """Per-row error (0/1 for rates, signed residual for regression) and a usable-row mask."""
    y = np.asarray(labels)
    if y.dtype.kind == "O":
        y = np.where(np.equal(y, None), np.nan, y)
    y = y.astype(np.float64).reshape(-1)
    p = np.asarray(predictions, dtype=np.float64)
    if task == "multiclass":
        if p.ndim != 2 or p.shape[0] != y.shape[0] or p.shape[1] < 2:
            return np.empty(0), np.empty(0, bool), "predictions must be (n, k>=2) probabilities"
        ok = ~np.isnan(y) & ~np.isnan(p).any(axis=1)
        yk = np.where(ok, y, 0)
        if np.any((yk != np.floor(yk)) | (yk < 0) | (yk >= p.shape[1])):
            return np.empty(0), ok, f"labels must be integers in [0, {p.shape[1]})"
        pred = np.argmax(np.where(ok[:, None], p, 0.0), axis=1)
        return (pred != yk).astype(np.float64), ok, ""
    p = p.reshape(-1)
    if p.shape != y.shape:
        return np.empty(0), np.empty(0, bool), f"{p.shape[0]} predictions, {y.shape[0]} labels"
    ok = ~np.isnan(y) & ~np.isnan(p)
    if task == "binary":
        yk = np.where(ok, y, 0)
        if np.any((yk != 0) & (yk != 1)):
            return np.empty(0), ok, "labels must be 0 or 1"
        return ((p >= threshold).astype(np.float64) != yk).astype(np.float64), ok, ""
    resid = np.where(ok, p - y, 0.0)
    if not np.all(np.isfinite(resid)):
        return np.empty(0), ok, "predictions and labels must be finite"
    return resid, ok, ""


def _rate_stat(
    cohort: str | None, k: int, n: int, min_n: int, z: float, overall: float | None
) -> CohortStat:
    if n == 0:
        return CohortStat(cohort=cohort, is_overall=overall is None, n=0, decidable=False)
    rate = k / n
    lo, hi = wilson_interval(k, n, z)
    decidable = n >= min_n
    return CohortStat(
        cohort=cohort, is_overall=overall is None, n=n, decidable=decidable,
        error_rate=rate, ci_low=lo, ci_high=hi,
        delta_error_rate=None if overall is None else rate - overall,
        worse_than_overall=None if overall is None else bool(decidable and lo > overall),
    )


def _regression_stat(
    cohort: str | None, n: int, sum_abs: float, sum_sq: float, min_n: int,
    overall: tuple[float, float] | None,
) -> CohortStat:
    if n == 0:
        return CohortStat(cohort=cohort, is_overall=overall is None, n=0, decidable=False)
    mae = sum_abs / n
    rmse = math.sqrt(sum_sq / n)
    return CohortStat(
        cohort=cohort, is_overall=overall is None, n=n, decidable=n >= min_n,
        mae=mae, rmse=rmse,
        delta_mae=None if overall is None else mae - overall[0],
        delta_rmse=None if overall is None else rmse - overall[1],
    )


def cohort_error(
    cohorts: Any,
    predictions: Any,
    labels: Any,
    *,
    task: Task,
    threshold: float = 0.5,
    min_n: int = DEFAULT_COHORT_MIN_N,
    z: float = Z_95,
) -> CohortReport:
    """Error per cohort value versus overall.

    binary: predicted positive when score >= threshold, error rate; multiclass: argmax of
    the probability row (ties to the lowest class), error rate; regression: MAE and RMSE.
    Rows with a missing prediction or label are dropped and counted; a missing cohort value
    is a cohort of its own (cohort=None).
    """
    if task not in ("binary", "multiclass", "regression"):
        raise ValueError("task must be 'binary', 'multiclass' or 'regression'")
    thr = threshold if task == "binary" else None
    try:
        err, ok, problem = _row_errors(task, predictions, labels, threshold)
        keys, _, code = categorical_codes(cohorts)
    except (TypeError, ValueError) as exc:
        problem, ok, code, keys, err = f"unreadable input: {exc}", None, None, [], None
    if problem or ok is None or code is None or err is None or code.shape != ok.shape:
        return CohortReport(
            status=INVALID_INPUT, reason=problem or "cohorts and predictions differ in length",
            task=task, n=0, n_dropped=0, min_n=min_n, threshold=thr, overall=None,
        )
    n_dropped = int(ok.shape[0] - np.count_nonzero(ok))
    names, group = cohort_groups(keys, code)
    return cohort_from_sums(CohortSums.of(names, group[ok], err[ok], task), task=task,
                            threshold=threshold, min_n=min_n, z=z, n_dropped=n_dropped)


def cohort_groups(keys: list[str], code: np.ndarray) -> tuple[list[str | None], np.ndarray]:
    """(cohort names in order, the missing one last as None; each row's index into them)
    from ``categorical_codes``. Distinct raw values sharing a string key (1 and "1") are one
    cohort."""
    names = sorted(set(keys))
    position = {name: i for i, name in enumerate(names)}
    of_key = np.array([position[k] for k in keys] or [0], dtype=np.int64)
    return [*names, None], np.where(code >= 0, of_key[np.maximum(code, 0)], len(names))


@dataclass(frozen=True)
class CohortSums:
    """Per cohort value: labeled rows, and errors (rates) or absolute and squared residual
    sums (regression). Adds up across windows; ``cohorts[i]`` None is the missing value."""

    cohorts: tuple[str | None, ...]
    n: np.ndarray
    first: np.ndarray   # errors (rates) or sum of |residual| (regression)
    second: np.ndarray  # sum of squared residuals (regression), zeros for rates
    # classifiers: the sum of scores (positive-class score, or top-label confidence) and the
    # count of positives (or correct top labels), for observed against expected positives;
    # None for a regression and for summaries written before they were kept
    scores: np.ndarray | None = None
    positives: np.ndarray | None = None

    @classmethod
    def of(cls, cohorts: list[str | None], group: np.ndarray, err: np.ndarray,
           task: str, score: np.ndarray | None = None,
           outcome: np.ndarray | None = None) -> CohortSums:
        m = len(cohorts)
        if task == "regression":
            first = np.bincount(group, weights=np.abs(err), minlength=m)
            second = np.bincount(group, weights=err * err, minlength=m)
        else:
            first = np.bincount(group, weights=err, minlength=m).round()
            second = np.zeros(m)
        scores = positives = None
        if score is not None and outcome is not None:
            scores = np.bincount(group, weights=score, minlength=m)
            positives = np.bincount(group, weights=outcome.astype(np.float64),
                                    minlength=m).round()
        return cls(tuple(cohorts), np.bincount(group, minlength=m), first, second, scores,
                   positives)

    def added(self, b: CohortSums) -> CohortSums:
        """These sums and ``b``'s, cohort by cohort (b's new cohorts after these); the
        scores and positives known only where both know them."""
        a = self
        position = {name: i for i, name in enumerate(a.cohorts)}
        names = list(a.cohorts)
        for name in b.cohorts:
            if name not in position:
                position[name] = len(names)
                names.append(name)
        m = len(names)
        idx = np.array([position[name] for name in b.cohorts], dtype=np.int64)

        def grow(x: np.ndarray, y: np.ndarray) -> np.ndarray:
            out = np.zeros(m, dtype=np.result_type(x, y))
            out[:x.shape[0]] = x
            np.add.at(out, idx, y)
            return out

        known = a.scores is not None and b.scores is not None and a.positives is not None \
            and b.positives is not None
        return CohortSums(tuple(names), grow(a.n, b.n), grow(a.first, b.first),
                          grow(a.second, b.second),
                          grow(a.scores, b.scores) if known else None,  # type: ignore[arg-type]
                          grow(a.positives, b.positives) if known else None)  # type: ignore[arg-type]


def cohort_from_sums(
    sums: CohortSums,
    *,
    task: Task,
    threshold: float = 0.5,
    min_n: int = DEFAULT_COHORT_MIN_N,
    z: float = Z_95,
    n_dropped: int = 0,
) -> CohortReport:
    """The cohort report from per-cohort sums: cohorts in name order, the missing one last."""
    thr = threshold if task == "binary" else None
    order = sorted((i for i in range(len(sums.cohorts)) if sums.n[i] > 0),
                   key=lambda i: (sums.cohorts[i] is None, sums.cohorts[i] or ""))
    n = int(sums.n.sum())
    if task == "regression":
        overall = _regression_stat(None, n, float(sums.first.sum()), float(sums.second.sum()),
                                   min_n, None)
        ref = None if n == 0 else (overall.mae, overall.rmse)
        rows = tuple(
            _regression_stat(sums.cohorts[g], int(sums.n[g]), float(sums.first[g]),
                             float(sums.second[g]), min_n, ref)
            for g in order
        )
    else:
        wrong = sums.first.round().astype(np.int64)
        overall = _rate_stat(None, int(wrong.sum()), n, min_n, z, None)
        rows = tuple(
            _rate_stat(sums.cohorts[g], int(wrong[g]), int(sums.n[g]), min_n, z,
                       overall.error_rate)
            for g in order
        )
    need = max(int(min_n), 1)
    if n < need:
        status = INSUFFICIENT_DATA
        reason = f"insufficient data: n={n}, minimum {need}; nothing is decidable"
        rows = tuple(_undecidable(r) for r in rows)
    else:
        status, reason = OK, ""
    return CohortReport(
        status=status, reason=reason, task=task, n=n, n_dropped=n_dropped, min_n=min_n,
        threshold=thr, overall=overall, cohorts=rows,
    )


def _undecidable(s: CohortStat) -> CohortStat:
    return replace(s, decidable=False,
                   worse_than_overall=None if s.worse_than_overall is None else False)
