"""Calibration: ECE, MCE, Brier score and reliability bins.

Confidence bins are equal-width with edges np.linspace(0, 1, n_bins + 1) and right-closed:
[e0, e1], (e1, e2], ..., (e_{B-1}, e_B]. The first bin includes 0 and a score of exactly
1.0 lands in the last bin.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from app.monitoring._result import INSUFFICIENT_DATA, INVALID_INPUT, OK, JsonResult

DEFAULT_CALIBRATION_BINS = 10
DEFAULT_CALIBRATION_MIN_N = 100
PROB_SUM_TOLERANCE = 1e-3


@dataclass(frozen=True)
class ReliabilityBin(JsonResult):
    """One point of a reliability diagram; empty bins carry None, never NaN."""

    lower: float
    upper: float
    count: int
    mean_confidence: float | None
    observed_rate: float | None


@dataclass(frozen=True)
class CalibrationResult(JsonResult):
    status: str
    reason: str
    kind: str
    n: int
    n_dropped: int
    n_bins: int
    ece: float | None = None
    mce: float | None = None
    brier: float | None = None
    bins: tuple[ReliabilityBin, ...] = ()


def confidence_bin_index(conf: np.ndarray, n_bins: int) -> np.ndarray:
    """Right-closed equal-width bin index; 0 goes to the first bin, 1.0 to the last."""
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    idx = np.searchsorted(edges, conf, side="left") - 1
    return np.clip(idx, 0, n_bins - 1)


MAX_CALIBRATION_BINS = 100
# Every edge of every equal-width binning with 1..100 bins, as np.linspace computes it. A
# confidence's slot on this fine partition determines its bin for every such n_bins, so sums
# kept per fine slot give the exact reliability bins for any n_bins a report asks for.
FINE_EDGES = np.unique(np.concatenate(
    [np.linspace(0.0, 1.0, n + 1) for n in range(1, MAX_CALIBRATION_BINS + 1)]))
N_FINE_SLOTS = int(FINE_EDGES.shape[0])


def fine_slot_index(conf: np.ndarray) -> np.ndarray:
    """Slot k holds confidences in (FINE_EDGES[k-1], FINE_EDGES[k]]; slot 0 holds 0."""
    return np.searchsorted(FINE_EDGES, conf, side="left")


@dataclass(frozen=True)
class CalibrationSums:
    """What calibration needs from a set of labeled predictions; adds up across windows.

    Per fine confidence slot: the count, the sum of confidences and the sum of outcomes
    (positive label for binary, top class correct for multiclass); the Brier sum; the count
    of labels per class index.
    """

    count: np.ndarray
    confidence: np.ndarray
    outcome: np.ndarray
    brier: float
    label_counts: np.ndarray

    @classmethod
    def of(cls, conf: np.ndarray, outcome: np.ndarray, brier_terms: np.ndarray,
           labels: np.ndarray, n_classes: int) -> CalibrationSums:
        slot = fine_slot_index(conf)
        return cls(
            count=np.bincount(slot, minlength=N_FINE_SLOTS),
            confidence=np.bincount(slot, weights=conf, minlength=N_FINE_SLOTS),
            outcome=np.bincount(slot, weights=outcome.astype(np.float64),
                                minlength=N_FINE_SLOTS),
            brier=float(np.sum(brier_terms)),
            label_counts=np.bincount(labels.astype(np.intp), minlength=n_classes),
        )

    @property
    def n(self) -> int:
        return int(self.count.sum())


def _reliability(
    sums: CalibrationSums, n_bins: int
) -> tuple[float, float, tuple[ReliabilityBin, ...]]:
    coarse = confidence_bin_index(FINE_EDGES, n_bins)
    counts = np.bincount(coarse, weights=sums.count, minlength=n_bins).round().astype(np.int64)
    sum_conf = np.bincount(coarse, weights=sums.confidence, minlength=n_bins)
    sum_acc = np.bincount(coarse, weights=sums.outcome, minlength=n_bins)
    n = int(counts.sum())
    nonempty = counts > 0
    safe = np.where(nonempty, counts, 1)
    mean_conf = sum_conf / safe
    rate = sum_acc / safe
    gap = np.abs(rate - mean_conf)
    ece = float(np.sum(counts[nonempty] / n * gap[nonempty]))
    mce = float(gap[nonempty].max())
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    bins = tuple(
        ReliabilityBin(
            lower=float(edges[i]), upper=float(edges[i + 1]), count=int(counts[i]),
            mean_confidence=float(mean_conf[i]) if nonempty[i] else None,
            observed_rate=float(rate[i]) if nonempty[i] else None,
        )
        for i in range(n_bins)  # one object per bin for the report, not per row
    )
    return ece, mce, bins


def calibration_from_sums(
    kind: str,
    sums: CalibrationSums,
    n_bins: int = DEFAULT_CALIBRATION_BINS,
    *,
    min_n: int = DEFAULT_CALIBRATION_MIN_N,
    n_dropped: int = 0,
) -> CalibrationResult:
    """ECE, MCE, Brier and reliability bins from summed labeled predictions (any window)."""
    if not 1 <= n_bins <= MAX_CALIBRATION_BINS:
        raise ValueError(f"n_bins must be in [1, {MAX_CALIBRATION_BINS}]")
    n = sums.n
    need = max(int(min_n), 1)
    if n < need:
        return _empty(kind, INSUFFICIENT_DATA, f"insufficient data: n={n}, minimum {need}",
                      n, n_dropped, n_bins)
    ece, mce, bins = _reliability(sums, n_bins)
    present = np.flatnonzero(sums.label_counts)
    reason = ""
    if present.size == 1:
        reason = (f"only one class present (all labels {int(present[0])})" if kind == "binary"
                  else f"only one class present (label {int(present[0])})")
    return CalibrationResult(
        status=OK, reason=reason, kind=kind, n=n, n_dropped=n_dropped, n_bins=n_bins,
        ece=ece, mce=mce, brier=sums.brier / n, bins=bins,
    )


def _labels_vector(labels: Any) -> tuple[np.ndarray, np.ndarray]:
    """Labels as float64 plus a mask of usable rows (NaN / None labels are dropped)."""
    y = np.asarray(labels)
    if y.dtype.kind == "O":
        y = np.where(np.equal(y, None), np.nan, y).astype(np.float64)
    else:
        y = y.astype(np.float64)
    y = y.reshape(-1)
    return y, ~np.isnan(y)


def _empty(kind: str, status: str, reason: str, n: int, n_dropped: int,
           n_bins: int) -> CalibrationResult:
    return CalibrationResult(
        status=status, reason=reason, kind=kind, n=n, n_dropped=n_dropped, n_bins=n_bins,
    )


def calibration_binary(
    scores: Any,
    labels: Any,
    n_bins: int = DEFAULT_CALIBRATION_BINS,
    *,
    min_n: int = DEFAULT_CALIBRATION_MIN_N,
) -> CalibrationResult:
    """Confidence is the positive-class score; accuracy is the positive rate in the bin.

    Brier = mean (p - y)^2. Rows with a missing score or label are dropped and counted.
    """
    if n_bins < 1:
        raise ValueError("n_bins must be >= 1")
    try:
        p = np.asarray(scores, dtype=np.float64).reshape(-1)
        y, y_ok = _labels_vector(labels)
    except (TypeError, ValueError) as exc:
        return _empty("binary", INVALID_INPUT, f"unreadable input: {exc}", 0, 0, n_bins)
    if p.shape != y.shape:
        return _empty("binary", INVALID_INPUT,
                      f"{p.shape[0]} scores but {y.shape[0]} labels", 0, 0, n_bins)
    keep = y_ok & ~np.isnan(p)
    p, y = p[keep], y[keep]
    n, dropped = int(p.shape[0]), int(keep.shape[0] - p.shape[0])
    if np.any((p < 0) | (p > 1)):
        return _empty("binary", INVALID_INPUT, "scores must lie in [0, 1]", n, dropped, n_bins)
    if np.any((y != 0) & (y != 1)):
        return _empty("binary", INVALID_INPUT, "labels must be 0 or 1", n, dropped, n_bins)
    sums = CalibrationSums.of(p, y, (p - y) ** 2, y, 2)
    return calibration_from_sums("binary", sums, n_bins, min_n=min_n, n_dropped=dropped)


def calibration_multiclass(
    probs: Any,
    labels: Any,
    n_bins: int = DEFAULT_CALIBRATION_BINS,
    *,
    min_n: int = DEFAULT_CALIBRATION_MIN_N,
    sum_tolerance: float = PROB_SUM_TOLERANCE,
) -> CalibrationResult:
    """Top-label calibration: confidence = max probability, correct = argmax == label.

    Brier = mean over rows of sum over classes (p_k - onehot_k)^2, so it lies in [0, 2]
    (the original Brier 1950 definition; binary Brier is half of it on two columns).
    """
    if n_bins < 1:
        raise ValueError("n_bins must be >= 1")
    try:
        p = np.asarray(probs, dtype=np.float64)
        y, y_ok = _labels_vector(labels)
    except (TypeError, ValueError) as exc:
        return _empty("multiclass", INVALID_INPUT, f"unreadable input: {exc}", 0, 0, n_bins)
    if p.ndim != 2 or p.shape[1] < 2 or p.shape[0] != y.shape[0]:
        return _empty("multiclass", INVALID_INPUT,
                      "probs must be (n, k>=2) with one label per row", 0, 0, n_bins)
    keep = y_ok & ~np.isnan(p).any(axis=1)
    p, y = p[keep], y[keep]
    n, dropped = int(p.shape[0]), int(keep.shape[0] - p.shape[0])
    k = p.shape[1]
    if np.any((p < 0) | (p > 1)):
        return _empty("multiclass", INVALID_INPUT, "probabilities must lie in [0, 1]",
                      n, dropped, n_bins)
    if np.any(np.abs(p.sum(axis=1) - 1.0) > sum_tolerance):
        return _empty("multiclass", INVALID_INPUT,
                      f"probability rows must sum to 1 (tolerance {sum_tolerance})",
                      n, dropped, n_bins)
    if np.any((y != np.floor(y)) | (y < 0) | (y >= k)):
        return _empty("multiclass", INVALID_INPUT, f"labels must be integers in [0, {k})",
                      n, dropped, n_bins)
    sums = multiclass_sums(p, y.astype(np.intp))
    return calibration_from_sums("multiclass", sums, n_bins, min_n=min_n, n_dropped=dropped)


def multiclass_sums(p: np.ndarray, yi: np.ndarray) -> CalibrationSums:
    """Top-label sums of (n, k) probability rows and integer labels (ties to the lowest
    class); Brier term per row = sum over classes (p_k - onehot_k)^2."""
    rows = np.arange(p.shape[0])
    pred = np.argmax(p, axis=1)
    diff = p.copy()
    diff[rows, yi] -= 1.0
    return CalibrationSums.of(p[rows, pred], pred == yi, np.sum(diff * diff, axis=1), yi,
                              p.shape[1])


def empty_calibration(n_classes: int) -> CalibrationSums:
    """Sums of no labeled prediction."""
    return CalibrationSums(np.zeros(N_FINE_SLOTS, dtype=np.int64), np.zeros(N_FINE_SLOTS),
                           np.zeros(N_FINE_SLOTS), 0.0, np.zeros(n_classes, dtype=np.int64))
