"""Summaries sent by a client, checked before anything adds them up.

A summary built elsewhere (a model server, a lake backfill, a Spark job) is read within
bounds (app/evaluation/packing.py ``unpack_untrusted``), then held to what a summary of this
model can be: the profile's layout, counts that are whole and non-negative, every column
counting each prediction exactly once, pairs that add up to the labeled count, finite sums.
Whatever passes merges exactly like a summary the service built itself; whatever does not is
refused with the reason, and nothing of the upload is stored.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from app.evaluation import cbpe
from app.evaluation.packing import PayloadError, drift_of, outcome_of, unpack_untrusted
from app.evaluation.summaries import CompiledProfile, DriftSummary, ModelShape, OutcomeSummary
from app.monitoring import CohortSums
from app.monitoring.calibration import N_FINE_SLOTS
from app.monitoring.embedding import OFFSET
from app.monitoring.multivariate import SUM_SLOTS


def _whole(meta: dict[str, Any], key: str) -> int:
    v = meta.get(key)
    if type(v) is not int or v < 0:
        raise PayloadError(f"meta.{key} must be a whole number >= 0")
    return v


def checked_drift(data: bytes, cp: CompiledProfile, n: int, max_bytes: int) -> DriftSummary:
    """A drift summary on ``cp`` counting ``n`` predictions, or PayloadError."""
    meta, arrays = unpack_untrusted(data, max_bytes)
    if _whole(meta, "n") != n:
        raise PayloadError(f"the payload counts {meta['n']} predictions, the summary says {n}")
    if _whole(meta, "size") != cp.size:
        raise PayloadError(f"the payload has {meta['size']} slots; the profile's layout has "
                           f"{cp.size}: it was built against another profile")
    extra = {k for k in arrays if k.startswith("cbpe_")}
    if set(arrays) - extra not in ({"dense"}, {"gap", "val"}):
        raise PayloadError("drift counts must be 'dense' or 'gap' and 'val'")
    _check_cbpe(arrays, extra, cp, n)
    if "gap" in arrays:
        gap = arrays["gap"]
        if gap.ndim != 1 or gap.shape != arrays["val"].shape or (
                gap.size and int(np.cumsum(gap, dtype=np.uint64)[-1]) >= cp.size) or (
                gap.size > 1 and not (gap[1:] > 0).all()):
            raise PayloadError("sparse drift counts must name distinct slots inside the layout")
    elif arrays["dense"].shape != (cp.size,):
        raise PayloadError("dense drift counts must have one count per slot")
    d = drift_of(meta, arrays, cp.key)
    if (d.counts < 0).any():  # a uint64 count past int64 wraps negative
        raise PayloadError("drift counts must be >= 0")
    for col in cp.columns:
        psi = d.slice(col.psi_offset, col.psi_slots)
        if int(psi.sum()) != n:
            raise PayloadError(f"column {col.name!r}: its bins count {int(psi.sum())} "
                               f"predictions, not {n}")
        if col.ks is not None and int(d.slice(col.ks_offset, col.ks.n_slots).sum()) \
                != n - int(psi[-1]):
            raise PayloadError(f"column {col.name!r}: its KS slots do not count its "
                               "non-missing values")
    if cp.pca is not None:
        _check_pca_sums(d.slice(cp.pca_offset, SUM_SLOTS), n, cp.pca.cap)
    for lay in cp.embeddings.layouts:
        _check_embedding_sums(lay.basis.feature, d.slice(lay.offset, lay.basis.slots), n)
    return d


def _check_embedding_sums(name: str, sums: np.ndarray, n: int) -> None:
    """An embedding's sums: m <= n vectors, each coordinate a whole number in [0, 2 OFFSET]."""
    m = int(sums[0])
    if m > n:
        raise PayloadError(f"embedding {name!r}: its sums count {m} vectors in {n} predictions")
    if int(sums[1:].max(initial=0)) > m * 2 * OFFSET:
        raise PayloadError(f"embedding {name!r}: its sums are not those of {m} whitened "
                           f"vectors (each coordinate between 0 and {2 * OFFSET})")


def _check_cbpe(arrays: dict[str, np.ndarray], names: set[str], cp: CompiledProfile,
                n: int) -> None:
    """The optional CBPE sums: all five arrays or none, on the profile's classes, finite,
    non-negative, and counting the payload's predictions."""
    if not names:
        return
    if names != {"cbpe_m", "cbpe_v", "cbpe_i", "cbpe_r", "cbpe_e"} or cp.cbpe is None:
        raise PayloadError("CBPE sums need cbpe_m, cbpe_v, cbpe_i, cbpe_r and cbpe_e, on a "
                           "profile with calibration maps")
    try:
        s = cbpe.from_arrays(arrays)
    except ValueError as exc:
        raise PayloadError(str(exc)) from None
    assert s is not None
    k = 2 if len(cp.cbpe) == 1 else len(cp.cbpe)
    parts = (s.matrix, s.variance, s.rows, s.expected)
    if s.matrix.shape != (k, k) or s.rows.shape[0] != (1 if k == 2 else k):
        raise PayloadError(f"the CBPE sums must be of the profile's {k} classes")
    if not all(np.isfinite(x).all() and (x >= 0).all() for x in parts):
        raise PayloadError("the CBPE sums must be finite and >= 0")
    if round(float(s.matrix.sum())) != n or round(float(s.rows[0].sum())) != n:
        raise PayloadError(f"the CBPE sums must count the payload's {n} predictions")


def _check_pca_sums(sums: np.ndarray, n: int, cap: int) -> None:
    """The multivariate error sums (n, sum q, sum q^2) of n rows each 0 <= q <= cap."""
    m, s1, s2 = (int(v) for v in sums)
    if m != n:
        raise PayloadError(f"the multivariate error sums count {m} predictions, not {n}")
    if s1 > n * cap or s2 > n * cap * cap or s1 * s1 > n * s2 or s2 < s1:
        raise PayloadError("the multivariate error sums are not those of whole errors "
                           f"between 0 and the profile's cap ({cap})")


def _check_cohorts(out: OutcomeSummary, shape: ModelShape) -> None:
    for key, c in out.cohorts.items():
        if key not in shape.cohort_keys:
            raise PayloadError(f"cohort key {key!r} is not one of the model's")
        if not (c.n.shape == c.first.shape == c.second.shape == (len(c.cohorts),)):
            raise PayloadError(f"cohort key {key!r}: its arrays differ in length")
        names = [x for x in c.cohorts if x is not None]
        if len(set(c.cohorts)) != len(c.cohorts) or not all(isinstance(x, str) for x in names):
            raise PayloadError(f"cohort key {key!r}: its values must be distinct strings")
        if (c.n < 0).any() or int(c.n.sum()) != out.labeled:
            raise PayloadError(f"cohort key {key!r}: its counts must add up to the "
                               "labeled pairs")
        if not (np.isfinite(c.first).all() and np.isfinite(c.second).all()):
            raise PayloadError(f"cohort key {key!r}: its sums must be finite")
        _check_cohort_scores(key, c, shape)


def _check_cohort_scores(key: str, c: CohortSums, shape: ModelShape) -> None:
    """A cohort's sum of scores and count of positives (optional): a classifier's only, of
    the cohorts' length, each within [0, n]."""
    if c.scores is None and c.positives is None:
        return
    if shape.task == "regression":
        raise PayloadError(f"cohort key {key!r}: a regression model's cohorts have no "
                           "sums of scores")
    if c.scores is None or c.positives is None or not (
            c.scores.shape == c.positives.shape == c.n.shape):
        raise PayloadError(f"cohort key {key!r}: its sums of scores and positives must both "
                           "be given, one per cohort")
    if not (np.isfinite(c.scores).all() and np.isfinite(c.positives).all()):
        raise PayloadError(f"cohort key {key!r}: its sums must be finite")
    if (c.scores < 0).any() or (c.scores > c.n).any() or (c.positives < 0).any() \
            or (c.positives > c.n).any() or (c.positives != np.round(c.positives)).any():
        raise PayloadError(f"cohort key {key!r}: its sums of scores and positives must lie "
                           "in [0, n] (positives whole)")


def _check_calibration(out: OutcomeSummary, shape: ModelShape) -> None:
    c = out.calibration
    if shape.task == "regression":
        if c is not None:
            raise PayloadError("a regression model's summary has no calibration sums")
        return
    if c is None:
        if out.labeled:
            raise PayloadError("labeled pairs of a classifier need calibration sums")
        return
    n_classes = 2 if shape.task == "binary_classification" else len(shape.classes)
    if c.label_counts.shape != (n_classes,) or (c.label_counts < 0).any() \
            or int(c.label_counts.sum()) != out.labeled:
        raise PayloadError(f"label counts must be {n_classes} counts adding up to the "
                           "labeled pairs")
    if (c.count < 0).any() or int(c.count.sum()) != out.labeled:
        raise PayloadError("calibration counts must add up to the labeled pairs")
    if not (np.isfinite(c.confidence).all() and np.isfinite(c.outcome).all()
            and np.isfinite(c.brier)):
        raise PayloadError("calibration sums must be finite")


def _check_confusion(out: OutcomeSummary, shape: ModelShape) -> None:
    """The optional confusion counts (absent: the payload predates them and reads as not
    knowing them): a classifier's, K x K whole counts of the labeled pairs whose columns are
    the label counts."""
    m = out.confusion
    if m is None or not m.size:
        return
    if shape.task == "regression":
        raise PayloadError("a regression model's summary has no confusion counts")
    k = 2 if shape.task == "binary_classification" else len(shape.classes)
    if m.shape != (k, k) or (m < 0).any() or int(m.sum()) != out.labeled:
        raise PayloadError(f"confusion counts must be {k} x {k} counts >= 0 adding up to the "
                           "labeled pairs")
    c = out.calibration
    if c is not None and not np.array_equal(m.sum(axis=0), c.label_counts):
        raise PayloadError("the confusion counts' columns must be the label counts")


def checked_outcome(data: bytes, shape: ModelShape, n: int, max_bytes: int
                    ) -> OutcomeSummary:
    """An outcome summary of this model counting ``n`` predictions, or PayloadError."""
    meta, arrays = unpack_untrusted(data, max_bytes)
    if _whole(meta, "n") != n:
        raise PayloadError(f"the payload counts {meta['n']} predictions, the summary says {n}")
    labeled = _whole(meta, "labeled")
    for key in ("errors", "squares"):
        if type(meta.get(key)) not in (int, float):
            raise PayloadError(f"meta.{key} must be a number")
    if "cal_idx" in arrays:
        idx = arrays["cal_idx"]
        if idx.ndim != 1 or any(arrays.get(k, np.empty(0)).shape != idx.shape
                                for k in ("cal_count", "cal_conf", "cal_outcome")) or (
                idx.size and (int(idx.min()) < 0 or int(idx.max()) >= N_FINE_SLOTS)):
            raise PayloadError("calibration arrays must name slots inside the fine grid")
    if "confusion" in arrays and (arrays["confusion"].ndim != 2
                                  or arrays["confusion"].dtype.kind not in "iu"):
        raise PayloadError("confusion counts must be a matrix of whole numbers")
    try:
        out = outcome_of(meta, arrays)
    except (KeyError, ValueError, TypeError, IndexError, RuntimeError, AttributeError) as exc:
        raise PayloadError(f"the outcome summary cannot be read ({type(exc).__name__})"
                           ) from None
    errors = float(meta["errors"])
    if not np.isfinite([errors, out.squares]).all():
        raise PayloadError("meta.errors and meta.squares must be finite numbers")
    if shape.task != "regression" and not 0 <= errors <= labeled:
        raise PayloadError("meta.errors must count wrong predictions among the labeled pairs")
    _check_calibration(out, shape)
    _check_confusion(out, shape)
    _check_cohorts(out, shape)
    if out.delays is not None and out.delays.n > labeled:
        raise PayloadError("the label-delay sketch holds more delays than labeled pairs")
    return out
