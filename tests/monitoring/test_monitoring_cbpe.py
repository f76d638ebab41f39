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
    confusion_counts,
    estimate,
    fit_calibration,
    fit_isotonic,
    realized,
    realized_metrics,
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


# --------------------------------------------------------------------------- realized


def test_realized_metrics_of_confusion_matrices_counted_by_hand() -> None:
    # binary, rows predicted (negative, positive), columns true: TN 50, FN 10, FP 5, TP 35
    got = realized_metrics([[50, 10], [5, 35]])
    assert got["accuracy"] == pytest.approx(85 / 100)
    assert got["precision"] == pytest.approx(35 / 40)
    assert got["recall"] == pytest.approx(35 / 45)
    assert got["f1"] == pytest.approx(70 / 85)
    # four classes: class 2 never predicted nor true (every metric undefined: left out of the
    # macro average), class 3 predicted twice and never true (recall undefined, precision 0)
    m = [[6, 1, 0, 0], [2, 3, 0, 0], [0, 0, 0, 0], [1, 1, 0, 0]]
    got = realized_metrics(m)
    assert got["accuracy"] == pytest.approx(9 / 14)
    assert got["precision"] == pytest.approx((6 / 7 + 3 / 5 + 0 / 2) / 3)
    assert got["recall"] == pytest.approx((6 / 9 + 3 / 5) / 2)
    assert got["f1"] == pytest.approx((12 / 16 + 6 / 10 + 0 / 2) / 3)
    # nothing predicted positive: precision undefined, the others defined
    assert realized_metrics([[7, 3], [0, 0]]) == pytest.approx(
        {"accuracy": 0.7, "precision": None, "recall": 0.0, "f1": 0.0})
    assert realized_metrics(np.zeros((3, 3))) == dict.fromkeys(
        ("accuracy", "precision", "recall", "f1"))


def test_confusion_counts_follow_the_estimates_predicted_class() -> None:
    # binary: a score of exactly 0.5 is predicted positive (>= 0.5)
    got = confusion_counts(2, [0.5, 0.49, 0.9, 0.1, 0.7], [1, 1, 0, 0, 1])
    assert got.tolist() == [[1, 1], [1, 2]] and got.dtype == np.int64
    # multiclass: the top class, ties to the first
    p = [[0.4, 0.4, 0.2], [0.1, 0.3, 0.6], [0.2, 0.5, 0.3], [0.3, 0.3, 0.4]]
    assert confusion_counts(3, p, [1, 2, 1, 0]).tolist() == [[0, 1, 0], [0, 1, 0], [1, 0, 1]]


def _numpy_realized(k: int, predicted: np.ndarray, y: np.ndarray) -> dict[str, float | None]:
    """The realized metrics straight from the rows, class by class (macro: the mean over the
    classes where each metric is defined)."""
    out: dict[str, list[float]] = {"precision": [], "recall": [], "f1": []}
    for c in [1] if k == 2 else range(k):
        tp = float(np.sum((predicted == c) & (y == c)))
        n_pred, n_true = float(np.sum(predicted == c)), float(np.sum(y == c))
        if n_pred:
            out["precision"].append(tp / n_pred)
        if n_true:
            out["recall"].append(tp / n_true)
        if n_pred + n_true:
            out["f1"].append(2 * tp / (n_pred + n_true))
    return {"accuracy": float(np.mean(predicted == y)),
            **{name: float(np.mean(v)) if v else None for name, v in out.items()}}


@pytest.mark.parametrize("k", [2, 3, 5])
@pytest.mark.parametrize("seed", range(4))
def test_realized_metrics_equal_scikit_learn_and_numpy_on_raw_rows(k: int, seed: int) -> None:
    from sklearn.metrics import accuracy_score, f1_score, precision_score, recall_score

    rng = np.random.default_rng(seed)
    n = int(rng.integers(5, 400))
    if k == 2:
        raw = rng.beta(2, 3, size=n)
        y = (rng.uniform(size=n) < raw).astype(int)
        predicted = (raw >= 0.5).astype(int)
        options = {"average": "binary", "pos_label": 1}
    else:  # a skewed prior, so that small windows miss some classes entirely
        raw = rng.dirichlet(np.geomspace(4, 0.2, k), size=n)
        y = np.array([rng.choice(k, p=row) for row in raw])
        predicted = np.argmax(raw, axis=1)
        options = {"average": "macro", "labels": list(range(k))}
    got = realized(k, raw, y)
    assert got == pytest.approx(_numpy_realized(k, predicted, y), rel=1e-12)
    assert got["accuracy"] == pytest.approx(accuracy_score(y, predicted), rel=1e-12)
    for name, score in (("precision", precision_score), ("recall", recall_score),
                        ("f1", f1_score)):
        # zero_division=nan: a class where the metric is undefined is left out of the mean
        want = float(score(y, predicted, zero_division=np.nan, **options))
        assert (got[name] is None) == bool(np.isnan(want)), name
        if got[name] is not None:
            assert got[name] == pytest.approx(want, rel=1e-12), name
