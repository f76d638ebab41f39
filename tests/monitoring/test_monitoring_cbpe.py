"""CBPE: the expected confusion matrix and its metrics held to hand-summed cases, the
isotonic map to scikit-learn's, the histogram ROC AUC to the row-ordered one within its
stated bound, the delta-method intervals to simulation, and the sums to their merge."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.isotonic import IsotonicRegression
from sklearn.metrics import roc_auc_score

from app.monitoring.cbpe import (
    AUC_SLOTS,
    CbpeSums,
    IsotonicMap,
    calibrate,
    cbpe_sums,
    estimate,
    fit_calibration,
    fit_isotonic,
    realized,
    roc_auc_from_histogram,
)

IDENTITY = (IsotonicMap(),)


def test_binary_confusion_matrix_summed_by_hand() -> None:
    # scores 0.9, 0.8 predicted positive; 0.3, 0.1 negative (score >= 0.5)
    e = estimate(cbpe_sums(IDENTITY, [0.9, 0.8, 0.3, 0.1]))
    tp, fp, fn, tn = 0.9 + 0.8, 0.1 + 0.2, 0.3 + 0.1, 0.7 + 0.9
    assert np.asarray(e.confusion) == pytest.approx(np.array([[tn, fn], [fp, tp]]))
    assert e.accuracy.value == pytest.approx((tp + tn) / 4)
    assert e.precision.value == pytest.approx(tp / 2)
    assert e.recall.value == pytest.approx(tp / (tp + fn))
    assert e.f1.value == pytest.approx(2 * tp / (2 * tp + fp + fn))
    # Poisson-binomial variance of the correct count: sum p(1 - p) over every row
    assert e.accuracy.std ** 2 == pytest.approx((0.09 + 0.16 + 0.21 + 0.09) / 16)
    assert e.precision.std ** 2 == pytest.approx((0.09 + 0.16) / 4)
    assert e.accuracy.lower == pytest.approx(e.accuracy.value - 1.96 * e.accuracy.std)


def test_binary_with_a_calibration_map_summed_by_hand() -> None:
    maps = (IsotonicMap((0.0, 1.0), (0.2, 0.6)),)  # p = 0.2 + 0.4 s
    e = estimate(cbpe_sums(maps, [0.9, 0.8, 0.3, 0.1]))
    # calibrated: 0.56, 0.52 (predicted positive by the raw score), 0.32, 0.24
    tp, fp, fn, tn = 0.56 + 0.52, 0.44 + 0.48, 0.32 + 0.24, 0.68 + 0.76
    assert np.asarray(e.confusion) == pytest.approx(np.array([[tn, fn], [fp, tp]]))
    assert e.accuracy.value == pytest.approx((tp + tn) / 4)
    assert e.precision.value == pytest.approx(tp / 2)
    assert e.recall.value == pytest.approx(tp / (tp + fn))
    assert e.f1.value == pytest.approx(2 * tp / (2 * tp + fp + fn))


def test_multiclass_confusion_matrix_summed_by_hand() -> None:
    p = np.array([[0.6, 0.3, 0.1], [0.2, 0.5, 0.3], [0.1, 0.2, 0.7], [0.5, 0.4, 0.1]])
    e = estimate(cbpe_sums(IDENTITY * 3, p))
    # predicted: 0, 1, 2, 0 -> rows of the matrix are the predicted rows' probabilities
    m = np.array([[1.1, 0.7, 0.2], [0.2, 0.5, 0.3], [0.1, 0.2, 0.7]])
    assert np.asarray(e.confusion) == pytest.approx(m)
    assert e.accuracy.value == pytest.approx((0.6 + 0.5 + 0.7 + 0.5) / 4)
    precision = [1.1 / 2, 0.5 / 1, 0.7 / 1]
    recall = [1.1 / 1.4, 0.5 / 1.4, 0.7 / 1.2]
    f1 = [2 * 1.1 / (2 + 1.4), 2 * 0.5 / (1 + 1.4), 2 * 0.7 / (1 + 1.2)]
    assert e.precision.value == pytest.approx(np.mean(precision))
    assert e.recall.value == pytest.approx(np.mean(recall))
    assert e.f1.value == pytest.approx(np.mean(f1))
    v_acc = 0.6 * 0.4 + 0.5 * 0.5 + 0.7 * 0.3 + 0.5 * 0.5
    assert e.accuracy.std ** 2 == pytest.approx(v_acc / 16)


def test_multiclass_rows_are_renormalised_after_calibration() -> None:
    maps = (IsotonicMap((0.0, 1.0), (0.0, 0.5)), IsotonicMap(), IsotonicMap())
    out = calibrate(maps, np.array([[0.6, 0.3, 0.1], [0.0, 0.0, 0.0]]))
    assert out[0] == pytest.approx(np.array([0.3, 0.3, 0.1]) / 0.7)
    assert out[1] == pytest.approx([1 / 3] * 3)  # all zero: uniform


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_isotonic_map_equals_scikit_learn(seed: int) -> None:
    rng = np.random.default_rng(seed)
    s = np.round(rng.uniform(size=3000), 3)  # ties pooled
    y = (rng.uniform(size=3000) < s ** 2).astype(float)
    ours = fit_isotonic(s, y)
    ref = IsotonicRegression(out_of_bounds="clip").fit(s, y)
    probe = np.concatenate([rng.uniform(-0.1, 1.1, 500), s[:200]])
    assert ours.apply(probe) == pytest.approx(ref.predict(probe), abs=1e-12)


def test_calibration_is_kept_only_where_it_helps() -> None:
    rng = np.random.default_rng(3)
    s = rng.uniform(size=20_000)
    overconfident_y = (rng.uniform(size=s.shape[0]) < 0.5 + 0.4 * (s - 0.5)).astype(float)
    fitted = fit_calibration(s, overconfident_y)
    assert fitted.x != () and len(fitted.x) < 400  # a flat run is kept by its two ends
    assert fit_calibration(s, np.zeros_like(s)).x == ()  # one class
    perfect = (s > 0.5).astype(float)
    assert fit_calibration(s, perfect).x == ()  # ranks perfectly: AUC > 0.999


def _row_ordered_auc(raw: np.ndarray, p: np.ndarray) -> float:
    """The estimate over rows sorted by raw score (each row positive with weight p and
    negative with weight 1 - p): scikit-learn's weighted ROC AUC."""
    n = raw.shape[0]
    return float(roc_auc_score(np.r_[np.ones(n), np.zeros(n)], np.r_[raw, raw],
                               sample_weight=np.r_[p, 1 - p]))


def test_histogram_auc_is_exact_with_a_row_per_slot() -> None:
    raw = (np.arange(50) * 13 % 50 + 0.5) / AUC_SLOTS * 7  # distinct slots
    p = np.clip(raw * 100, 0, 1)
    sums = cbpe_sums(IDENTITY, raw)
    sums.expected[0] = np.bincount(np.floor(raw * AUC_SLOTS).astype(int), weights=p,
                                   minlength=AUC_SLOTS)
    auc, bound = roc_auc_from_histogram(sums.rows[0], sums.expected[0])
    assert auc == pytest.approx(_row_ordered_auc(raw, p), abs=1e-12)
    assert bound > 0  # the bound still counts a row against itself


@pytest.mark.parametrize("seed", [0, 1])
def test_histogram_auc_within_its_bound(seed: int) -> None:
    rng = np.random.default_rng(seed)
    raw = rng.beta(2, 3, size=20_000)
    e = estimate(cbpe_sums(IDENTITY, raw))
    exact = _row_ordered_auc(raw, raw)
    assert abs(e.roc_auc - exact) <= e.roc_auc_bound
    assert e.roc_auc_bound < 2e-3


def test_intervals_cover_labels_drawn_from_the_calibrated_probabilities() -> None:
    rng = np.random.default_rng(5)
    raw = rng.beta(2, 2, size=4000)
    e = estimate(cbpe_sums(IDENTITY, raw))
    draws = [realized(2, raw, (rng.uniform(size=raw.shape[0]) < raw).astype(int))
             for _ in range(800)]
    for name in ("accuracy", "precision", "recall", "f1"):
        values = np.array([d[name] for d in draws])
        interval = getattr(e, name)
        assert values.mean() == pytest.approx(interval.value, abs=3 * interval.std / 20)
        assert values.std() == pytest.approx(interval.std, rel=0.1)


def test_sums_add_up_to_the_whole() -> None:
    rng = np.random.default_rng(9)
    p = rng.dirichlet([1, 1, 1], size=1000)
    maps = (IsotonicMap((0.0, 1.0), (0.1, 0.8)), IsotonicMap(), IsotonicMap())
    whole = cbpe_sums(maps, p)
    part = cbpe_sums(maps, p[:400])
    part.add(cbpe_sums(maps, p[400:]))
    for a, b in ((whole.matrix, part.matrix), (whole.rows, part.rows),
                 (whole.expected, part.expected), (whole.variance, part.variance)):
        assert a == pytest.approx(b)
    assert part.n == 1000
    assert estimate(part) == estimate(whole) or estimate(part).accuracy.value == \
        pytest.approx(estimate(whole).accuracy.value)


def test_undefined_metrics_are_none() -> None:
    e = estimate(cbpe_sums(IDENTITY, [0.1, 0.2]))  # nothing predicted positive
    assert e.precision is None and e.accuracy is not None
    assert estimate(CbpeSums.empty(2)).accuracy is None
