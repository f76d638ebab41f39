"""Confidence-based performance estimation (CBPE): a classifier's accuracy, precision, recall,
F1 and ROC AUC estimated from its scores alone, before any label arrives.

Calibrated, a score p_i is the probability that row i is positive, so every cell of the
confusion matrix has an expected value: over the rows predicted class c, the sum of their
calibrated probabilities of class k. Those sums (``CbpeSums``) are all an estimate needs;
they add up per bucket, so a window's estimate is exact whatever summary path folded it.

- Calibration (``fit_calibration``): per class (one against the rest), an isotonic map of
  the raw score fitted on the labeled reference (pool-adjacent-violators, interpolated
  linearly between the fitted points and clipped at the ends, as scikit-learn's
  ``IsotonicRegression(out_of_bounds="clip")``), kept only where it lowers the expected
  calibration error of held-out splits (10 stratified splits of 10%, ECE over 10
  equal-count bins of the pooled held-out rows), and never when the scores already rank
  perfectly (AUC > 0.999) or the reference holds one class. Multiclass rows are
  renormalised after calibration (uniform where every class maps to 0).
- Predicted class (``predicted_class``): the one rule of monitoring/wrong.py (binary: score
  >= 0.5; multiclass: the top class, ties to the first).
- Binary metrics are the positive class's; multiclass ones the macro average over the
  classes where the metric is defined. The realized metrics of labeled rows
  (``realized_metrics``, from their confusion counts ``confusion_counts``) are computed by
  the same formulas and the same averaging, so an estimate and its realized value compare.
- Confidence interval: each cell is a Poisson-binomial count with variance sum p(1 - p) over
  its rows; accuracy's variance is exact, precision's too (its denominator is known), recall
  and F1 by the delta method (their numerator and the other cell are sums over disjoint
  rows). A multiclass macro average adds the classes' variances (the classes' one-against-
  the-rest counts are treated as independent). Normal interval at ``z``, clipped to [0, 1].
- ROC AUC: from a histogram of the raw score (``AUC_SLOTS`` equal-width slots) holding rows
  and the sum of calibrated probabilities per slot; pairs of rows in different slots are
  ordered exactly, pairs within a slot given half credit. Whatever the order within a slot,
  the exact (row-ordered) estimate is within ``sum_b P_b N_b / (2 P N)`` of it, the stated
  ``roc_auc_bound`` (P_b, N_b: expected positives and negatives in slot b).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import optimize

from app.monitoring._result import JsonResult
from app.monitoring.wrong import THRESHOLD

AUC_SLOTS = 1000
ECE_BINS, SPLITS, TEST_SHARE, SPLIT_SEED = 10, 10, 0.1, 42


# --------------------------------------------------------------------------- calibration


@dataclass(frozen=True)
class IsotonicMap(JsonResult):
    """A fitted monotone map of one class's raw score: linear between the points (x, y),
    clipped beyond them. No points: the identity (calibration did not help)."""

    x: tuple[float, ...] = ()
    y: tuple[float, ...] = ()

    def apply(self, scores: Any) -> np.ndarray:
        s = np.asarray(scores, dtype=np.float64)
        if not self.x:
            return s.copy()
        return np.interp(s, np.asarray(self.x), np.asarray(self.y))

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> IsotonicMap:
        d = d or {}
        return cls(tuple(float(v) for v in d.get("x", ())), tuple(float(v) for v in d.get("y", ())))


def fit_isotonic(scores: Any, outcomes: Any) -> IsotonicMap:
    """The increasing least-squares fit of 0/1 ``outcomes`` on ``scores`` (tied scores
    pooled by their mean outcome)."""
    s = np.asarray(scores, dtype=np.float64)
    y = np.asarray(outcomes, dtype=np.float64)
    ux, inverse, counts = np.unique(s, return_inverse=True, return_counts=True)
    means = np.bincount(inverse.reshape(-1), weights=y, minlength=ux.shape[0]) / counts
    fitted = np.asarray(optimize.isotonic_regression(
        means, weights=counts.astype(np.float64)).x)
    keep = np.ones(fitted.shape[0], dtype=bool)  # the ends of each flat run suffice
    keep[1:-1] = (fitted[:-2] != fitted[1:-1]) | (fitted[1:-1] != fitted[2:])
    return IsotonicMap(tuple(ux[keep].tolist()), tuple(fitted[keep].tolist()))


def _ece(outcomes: np.ndarray, probs: np.ndarray) -> float:
    """ECE over ``ECE_BINS`` equal-count bins of the rows sorted by probability."""
    order = np.argsort(probs)
    p, y, n = probs[order], outcomes[order], probs.shape[0]
    bins = ECE_BINS if n > 2 * ECE_BINS else n // 2
    width = n // bins
    edges = list(range(0, n + 1, width))
    edges[-1] = n
    return float(sum((b - a) / n * abs(p[a:b].mean() - y[a:b].mean())
                     for a, b in zip(edges[:-1], edges[1:], strict=True)))


def _splits(outcomes: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
    """``SPLITS`` stratified (train, test) splits, ``TEST_SHARE`` of each class held out."""
    rng = np.random.default_rng(SPLIT_SEED)
    out = []
    for _ in range(SPLITS):
        test = []
        for value in (0.0, 1.0):
            idx = np.flatnonzero(outcomes == value)
            take = max(1, round(TEST_SHARE * idx.shape[0]))
            test.append(rng.permutation(idx)[:take])
        t = np.sort(np.concatenate(test))
        mask = np.ones(outcomes.shape[0], dtype=bool)
        mask[t] = False
        out.append((np.flatnonzero(mask), t))
    return out


def _ranks_perfectly(outcomes: np.ndarray, scores: np.ndarray) -> bool:
    pos, neg = scores[outcomes == 1], scores[outcomes == 0]
    ranks = np.searchsorted(np.sort(neg), pos, side="left") + np.searchsorted(
        np.sort(neg), pos, side="right")
    return float(ranks.sum()) / (2.0 * pos.shape[0] * neg.shape[0]) > 0.999


def fit_calibration(scores: Any, outcomes: Any) -> IsotonicMap:
    """One class's calibration map: isotonic where it lowers the held-out ECE, else the
    identity (module docstring)."""
    s = np.asarray(scores, dtype=np.float64)
    y = np.asarray(outcomes, dtype=np.float64)
    if s.shape[0] < 4 * ECE_BINS or np.unique(y).shape[0] < 2 or _ranks_perfectly(y, s):
        return IsotonicMap()
    tests, raw, calibrated = [], [], []
    for train, test in _splits(y):
        tests.append(y[test])
        raw.append(s[test])
        calibrated.append(fit_isotonic(s[train], y[train]).apply(s[test]))
    y_t = np.concatenate(tests)
    if _ece(y_t, np.concatenate(raw)) > _ece(y_t, np.concatenate(calibrated)):
        return fit_isotonic(s, y)
    return IsotonicMap()


def calibrate(maps: tuple[IsotonicMap, ...], probabilities: Any) -> np.ndarray:
    """Rows of class probabilities (binary: the scores, one map) through their maps; a
    multiclass row renormalised to sum 1 (uniform where it sums to 0)."""
    p = np.asarray(probabilities, dtype=np.float64)
    if p.ndim == 1:
        return np.clip(maps[0].apply(p), 0.0, 1.0)
    out = np.column_stack([m.apply(p[:, k]) for k, m in enumerate(maps)])
    total = out.sum(axis=1, keepdims=True)
    uniform = np.full_like(out, 1.0 / out.shape[1])
    return np.divide(out, total, out=uniform, where=total != 0)


# --------------------------------------------------------------------------- sums


@dataclass
class CbpeSums:
    """What an estimate needs, summed over rows: ``matrix[c, k]`` the expected rows predicted
    c of true class k (sum of calibrated probabilities of k), ``variance[c, k]`` their
    Poisson-binomial variance (sum p(1 - p)); per scored class (binary: the score alone) and
    ``AUC_SLOTS`` slots of its raw score, ``rows`` and ``expected`` positives."""

    matrix: np.ndarray
    variance: np.ndarray
    rows: np.ndarray
    expected: np.ndarray

    @classmethod
    def empty(cls, n_classes: int) -> CbpeSums:
        scored = 1 if n_classes == 2 else n_classes
        return cls(np.zeros((n_classes, n_classes)), np.zeros((n_classes, n_classes)),
                   np.zeros((scored, AUC_SLOTS)), np.zeros((scored, AUC_SLOTS)))

    def add(self, other: CbpeSums) -> None:
        if other.matrix.shape != self.matrix.shape:
            raise ValueError("CBPE sums of different class counts do not add up")
        self.matrix += other.matrix
        self.variance += other.variance
        self.rows += other.rows
        self.expected += other.expected

    @property
    def n(self) -> int:
        return int(round(float(self.rows[0].sum())))


def _slot(scores: np.ndarray) -> np.ndarray:
    return np.clip(np.floor(scores * AUC_SLOTS), 0, AUC_SLOTS - 1).astype(np.int64)


def predicted_class(raw: np.ndarray) -> np.ndarray:
    """Each row's predicted class index from raw scores (binary, shape (n,): 1 when the
    score is >= ``THRESHOLD``) or class probabilities (shape (n, k): the top class)."""
    if raw.ndim == 1:
        return (raw >= THRESHOLD).astype(np.int64)
    return np.argmax(raw, axis=1)


def cbpe_sums(maps: tuple[IsotonicMap, ...], probabilities: Any) -> CbpeSums:
    """The sums of rows of raw scores (binary: shape (n,)) or class probabilities (shape
    (n, k)), calibrated with ``maps`` (one per scored class)."""
    raw = np.asarray(probabilities, dtype=np.float64)
    cal = calibrate(maps, raw)
    predicted = predicted_class(raw)
    if raw.ndim == 1:
        raw2, cal2 = raw[:, None], cal[:, None]
        full = np.column_stack([1.0 - cal, cal])
    else:
        raw2, cal2, full = raw, cal, cal
    k = full.shape[1]
    out = CbpeSums.empty(k)
    for c in range(k):
        rows = full[predicted == c]
        out.matrix[c] = rows.sum(axis=0)
        out.variance[c] = (rows * (1.0 - rows)).sum(axis=0)
    for j in range(raw2.shape[1]):
        slot = _slot(raw2[:, j])
        out.rows[j] = np.bincount(slot, minlength=AUC_SLOTS)
        out.expected[j] = np.bincount(slot, weights=cal2[:, j], minlength=AUC_SLOTS)
    return out


# --------------------------------------------------------------------------- estimates


@dataclass(frozen=True)
class Interval(JsonResult):
    """An estimate, its standard error and its normal interval (clipped to [0, 1])."""

    value: float
    std: float
    lower: float
    upper: float


@dataclass(frozen=True)
class CbpeEstimate(JsonResult):
    """Estimated metrics of ``n`` predictions (None where undefined), the expected
    confusion matrix (rows: predicted class, columns: true class) and the ROC AUC's bound."""

    n: int
    accuracy: Interval | None
    precision: Interval | None
    recall: Interval | None
    f1: Interval | None
    roc_auc: float | None
    roc_auc_bound: float | None
    confusion: tuple[tuple[float, ...], ...]


def _interval(value: float, var: float, z: float) -> Interval:
    std = math.sqrt(max(var, 0.0))
    return Interval(value, std, max(0.0, value - z * std), min(1.0, value + z * std))


def _one_class(tp: float, v_tp: float, predicted: float, fn: float, v_fn: float
               ) -> tuple[tuple[float, float] | None, ...]:
    """(precision, recall, F1) of one class as (value, variance), None where undefined:
    ``tp`` over the ``predicted`` rows, ``fn`` over the others."""
    precision = (tp / predicted, v_tp / predicted ** 2) if predicted > 0 else None
    actual = tp + fn
    recall = ((tp / actual, (fn ** 2 * v_tp + tp ** 2 * v_fn) / actual ** 4)
              if actual > 0 else None)
    d = predicted + actual  # 2 TP + FP + FN
    f1 = ((2 * tp / d, 4 * ((predicted + fn) ** 2 * v_tp + tp ** 2 * v_fn) / d ** 4)
          if d > 0 else None)
    return precision, recall, f1


def _macro(parts: list[tuple[float, float] | None], z: float) -> Interval | None:
    known = [p for p in parts if p is not None]
    if not known:
        return None
    m = len(known)
    return _interval(sum(v for v, _ in known) / m, sum(s for _, s in known) / m ** 2, z)


def roc_auc_from_histogram(rows: Any, expected: Any) -> tuple[float, float] | None:
    """(estimated ROC AUC, its bound) from rows and expected positives per slot of the raw
    score (ascending); None without expected positives or negatives."""
    p_b = np.asarray(expected, dtype=np.float64)[::-1]
    n_b = np.asarray(rows, dtype=np.float64)[::-1] - p_b
    pos, neg = float(p_b.sum()), float(n_b.sum())
    if pos <= 0 or neg <= 0:
        return None
    above = np.cumsum(p_b) - p_b
    auc = float(np.sum(n_b * (above + p_b / 2.0))) / (pos * neg)
    bound = float(np.sum(n_b * p_b)) / (2.0 * pos * neg)
    return min(max(auc, 0.0), 1.0), bound


def estimate(sums: CbpeSums, z: float = 1.96) -> CbpeEstimate:
    """The estimated metrics of the rows ``sums`` holds (module docstring)."""
    m, v = sums.matrix, sums.variance
    n = float(m.sum())
    k = m.shape[0]
    if n <= 0:
        return CbpeEstimate(0, None, None, None, None, None, None, ())
    accuracy = _interval(float(np.trace(m)) / n, float(np.trace(v)) / n ** 2, z)
    per_class = []
    for c in ([1] if k == 2 else range(k)):
        others = [r for r in range(k) if r != c]
        per_class.append(_one_class(float(m[c, c]), float(v[c, c]), float(m[c].sum()),
                                    float(m[others, c].sum()), float(v[others, c].sum())))
    precision, recall, f1 = (_macro([p[i] for p in per_class], z) for i in range(3))
    aucs = [roc_auc_from_histogram(sums.rows[j], sums.expected[j])
            for j in range(sums.rows.shape[0])]
    known = [a for a in aucs if a is not None]
    auc = sum(a for a, _ in known) / len(known) if known else None
    bound = sum(b for _, b in known) / len(known) if known else None
    return CbpeEstimate(int(round(n)), accuracy, precision, recall, f1, auc, bound,
                        tuple(tuple(float(x) for x in row) for row in m))


def confusion_counts(n_classes: int, probabilities: Any, labels: Any) -> np.ndarray:
    """The realized confusion matrix of labeled rows: ``[c, k]`` the rows predicted class c
    (``predicted_class`` of the raw scores or probabilities) whose label is class k (binary:
    0/1; multiclass: the class index), as whole counts (int64)."""
    raw = np.asarray(probabilities, dtype=np.float64)
    y = np.asarray(labels, dtype=np.int64)
    k = 2 if raw.ndim == 1 else n_classes
    return np.bincount(predicted_class(raw) * k + y, minlength=k * k).reshape(k, k)


NO_CONFUSION = np.zeros((0, 0), dtype=np.int64)  # nothing counted
NO_CONFUSION.flags.writeable = False


def added_confusion(a: np.ndarray | None, b: np.ndarray | None) -> np.ndarray | None:
    """The sum of two confusion counts: unknown (None) once either is; an empty one
    (``NO_CONFUSION``) adds nothing."""
    if a is None or b is None:
        return None
    if not b.size:
        return a
    if not a.size:
        return b
    if a.shape != b.shape:
        raise ValueError("confusion counts of different class counts do not add up")
    return a + b


def realized_metrics(confusion: Any) -> dict[str, float | None]:
    """Accuracy, precision, recall and F1 of a realized confusion matrix (rows: predicted
    class, columns: true class), by the estimate's own formulas and averaging (binary: the
    positive class, index 1; multiclass: the macro average over the classes where each is
    defined); None where undefined (no labeled row, or no class where it is)."""
    m = np.asarray(confusion, dtype=np.float64)
    sums = CbpeSums.empty(m.shape[0])
    sums.matrix[:] = m
    e = estimate(sums)
    return {name: (None if getattr(e, name) is None else getattr(e, name).value)
            for name in ("accuracy", "precision", "recall", "f1")}


def realized(task_classes: int, probabilities: Any, labels: Any) -> dict[str, float | None]:
    """The realized metrics of labeled rows (raw scores, predicted classes by the same
    rule): what an estimate is compared with once labels come."""
    return realized_metrics(confusion_counts(task_classes, probabilities, labels))
