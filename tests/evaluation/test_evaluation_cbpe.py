"""CBPE sums in the summaries: folded per bucket with the profile's calibration maps, equal to
the estimator's on the same rows, exact under merge in any split, unknown where a payload
predates them, and checked when a client uploads them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from app.evaluation import cbpe
from app.evaluation.checks.performance import performance
from app.evaluation.fold import arrow_from_records, fold, fold_pairs, merge
from app.evaluation.imported import checked_drift, checked_outcome
from app.evaluation.packing import (
    PayloadError,
    pack,
    pack_drift,
    pack_outcome,
    unpack,
    unpack_drift,
    unpack_outcome,
)
from app.evaluation.policy import Thresholds
from app.evaluation.summaries import CompiledProfile, DriftSummary, ModelShape, OutcomeSummary
from app.evaluation.windows import MergedWindow
from app.monitoring.cbpe import (
    IsotonicMap,
    cbpe_sums,
    confusion_counts,
    estimate,
    realized,
)
from app.storage.registry import ModelRow
from app.storage.summaries import DRIFT, OUTCOME

T0 = datetime(2026, 3, 2, tzinfo=UTC)
BUCKET = 600.0
BINARY = ModelShape("binary_classification", (), (), ("no", "yes"))
MULTI = ModelShape("multiclass_classification", (), (), ("a", "b", "c"))
ROW = ModelRow(id=1, name="m", task="binary_classification", features=[], cohort_keys=[],
               classes=["no", "yes"], created_at=T0)


def _profile(shape: ModelShape, maps: list[IsotonicMap]) -> CompiledProfile:
    doc = {"features": {}, "prediction": None,
           "cbpe": {"maps": [m.to_dict() for m in maps], "n_labeled": 500,
                    "realized": {"accuracy": 0.8, "precision": 0.7, "recall": 0.6,
                                 "f1": 0.65}}}
    return CompiledProfile.compile(doc, "k1")


def _records(shape: ModelShape, raw: np.ndarray, seconds: np.ndarray) -> list[dict]:
    out = []
    for r, s in zip(raw, seconds, strict=True):
        if shape.task == "binary_classification":
            pred = {"score": float(r)}
        else:
            pred = {"probabilities": dict(zip(shape.classes, map(float, r), strict=True))}
        out.append({"timestamp": T0 + timedelta(seconds=float(s)), "prediction": pred})
    return out


def _fold(shape: ModelShape, cp: CompiledProfile, raw: np.ndarray, seconds: np.ndarray):
    rows = fold(shape, arrow_from_records(shape, _records(shape, raw, seconds)), 1, {1: cp},
                BUCKET)
    return [r for r in rows if r.kind == DRIFT]


@pytest.mark.parametrize("shape", [BINARY, MULTI], ids=["binary", "multiclass"])
def test_fold_holds_the_estimators_sums_per_bucket_and_merges_exactly(shape):
    rng = np.random.default_rng(4)
    n = 900
    raw = rng.uniform(size=n) if shape is BINARY else rng.dirichlet([2, 1, 1], size=n)
    maps = [IsotonicMap((0.0, 0.5, 1.0), (0.1, 0.4, 0.95))] * (1 if shape is BINARY else 3)
    cp = _profile(shape, maps)
    seconds = np.sort(rng.uniform(0, 3 * BUCKET, n))
    whole = _fold(shape, cp, raw, seconds)
    assert len(whole) == 3  # three buckets
    bucket = np.floor(seconds / BUCKET)
    for i, row in enumerate(whole):
        got = unpack_drift(row.payload, cp.key).cbpe
        want = cbpe_sums(tuple(maps), raw[bucket == i])
        assert got.matrix == pytest.approx(want.matrix)
        assert got.rows == pytest.approx(want.rows) and got.expected == pytest.approx(
            want.expected)
    # folded in two arbitrary parts, merged: the same sums as folded whole
    cut = rng.permutation(n)
    parts = _fold(shape, cp, raw[cut[:400]], seconds[cut[:400]]) + _fold(
        shape, cp, raw[cut[400:]], seconds[cut[400:]])
    for a, b in zip(merge(parts), whole, strict=True):
        x, y = unpack_drift(a.payload, cp.key).cbpe, unpack_drift(b.payload, cp.key).cbpe
        assert x.matrix == pytest.approx(y.matrix) and x.variance == pytest.approx(y.variance)
        assert estimate(x).f1.value == pytest.approx(estimate(y).f1.value, abs=1e-12)


def test_a_payload_without_the_sums_reads_as_unknown():
    cp = _profile(BINARY, [IsotonicMap()])
    rng = np.random.default_rng(1)
    new = _fold(BINARY, cp, rng.uniform(size=50), np.zeros(50))[0]
    d = unpack_drift(new.payload, cp.key)
    old = pack_drift(DriftSummary(cp.key, d.n, d.counts))  # as an earlier release wrote it
    assert unpack_drift(old, cp.key).cbpe is None
    merged = merge([new, new._replace(payload=old)])
    assert unpack_drift(merged[0].payload, cp.key).cbpe is None
    total = DriftSummary.empty(cp)
    total.add(d)
    assert total.cbpe is not None
    total.add(unpack_drift(old, cp.key))
    assert total.cbpe is None and total.n == 2 * d.n


def test_uploaded_sums_are_checked():
    cp = _profile(BINARY, [IsotonicMap()])
    rng = np.random.default_rng(2)
    row = _fold(BINARY, cp, rng.uniform(size=80), np.zeros(80))[0]
    assert checked_drift(row.payload, cp, 80, 10**7).cbpe.n == 80
    meta, arrays = unpack(row.payload)
    bad = {**arrays, "cbpe_m": -arrays["cbpe_m"]}
    with pytest.raises(PayloadError, match="finite and >= 0"):
        checked_drift(pack(meta, bad), cp, 80, 10**7)
    short = {k: v for k, v in arrays.items() if k != "cbpe_e"}
    with pytest.raises(PayloadError, match="need cbpe_m"):
        checked_drift(pack(meta, short), cp, 80, 10**7)
    wrong = {**arrays, "cbpe_i": arrays["cbpe_i"] + 10**6}
    with pytest.raises(PayloadError, match="slots"):
        checked_drift(pack(meta, wrong), cp, 80, 10**7)
    with pytest.raises(PayloadError, match="calibration maps"):
        checked_drift(row.payload, CompiledProfile(cp.key, cp.columns, cp.size), 80, 10**7)


def test_reference_section_needs_labels_and_enough_rows():
    rng = np.random.default_rng(3)
    s = rng.uniform(size=300)
    labels = np.where(rng.uniform(size=300) < s, "yes", "no").astype(object)
    section = cbpe.reference_section("binary_classification", ("no", "yes"), s, labels)
    assert section["n_labeled"] == 300 and set(section["realized"]) == {
        "accuracy", "precision", "recall", "f1"}
    assert cbpe.reference_section("binary_classification", ("no", "yes"), s[:50],
                                  labels[:50]) is None
    assert cbpe.reference_section("regression", (), s, labels) is None
    assert cbpe.reference_section("binary_classification", ("no", "yes"), s, None) is None


# --------------------------------------------------------------------------- realized


def _labeled_records(shape: ModelShape, raw: np.ndarray, y: np.ndarray,
                     seconds: np.ndarray, delay: float | None) -> list[dict]:
    """Records with their labels: inline (``delay`` None) or arriving ``delay`` s later."""
    out = _records(shape, raw, seconds)
    for r, label in zip(out, y, strict=True):
        r["label"] = shape.classes[int(label)]
        if delay is not None:
            r["label_timestamp"] = r["timestamp"] + timedelta(seconds=delay)
    return out


def _outcomes(rows) -> dict:
    return {r.bucket_start: unpack_outcome(r.payload) for r in merge(rows)
            if r.kind == OUTCOME}


@pytest.mark.parametrize("shape", [BINARY, MULTI], ids=["binary", "multiclass"])
def test_confusion_counts_per_bucket_the_same_with_labels_inline_or_late(shape):
    rng = np.random.default_rng(6)
    n = 700
    raw = rng.uniform(size=n) if shape is BINARY else rng.dirichlet([2, 1, 1], size=n)
    y = ((rng.uniform(size=n) < raw).astype(int) if shape is BINARY
         else np.array([rng.choice(3, p=p) for p in raw]))
    seconds = np.sort(rng.uniform(0, 3 * BUCKET, n))
    labeled = rng.uniform(size=n) < 0.6
    cp = _profile(shape, [IsotonicMap()] * (1 if shape is BINARY else 3))
    inline = fold(shape, arrow_from_records(shape, _labeled_records(
        shape, raw[labeled], y[labeled], seconds[labeled], None) + _records(
        shape, raw[~labeled], seconds[~labeled])), 1, {1: cp}, BUCKET)
    # the predictions folded unlabeled, their labels paired later (the pairs' sums only)
    late = fold(shape, arrow_from_records(shape, _records(shape, raw, seconds)), 1, {1: cp},
                BUCKET) + fold_pairs(shape, arrow_from_records(shape, _labeled_records(
                    shape, raw[labeled], y[labeled], seconds[labeled], 3600.0)), 1, BUCKET)
    bucket = np.floor(seconds / BUCKET)
    a, b = _outcomes(inline), _outcomes(late)
    assert sorted(a) == sorted(b) and len(a) == 3
    for i, start in enumerate(sorted(a)):
        mine = labeled & (bucket == i)
        want = confusion_counts(len(shape.classes), raw[mine], y[mine])
        assert a[start].confusion.tolist() == b[start].confusion.tolist() == want.tolist()
        assert a[start].labeled == int(want.sum())


def _window(outcome, cp: CompiledProfile, raw: np.ndarray) -> MergedWindow:
    sums = cbpe_sums(cp.cbpe, raw)
    return MergedWindow(1, T0, T0, outcome, DriftSummary(cp.key, sums.n, np.zeros(0), sums))


def _labeled_binary(seed: int, n: int):
    """(scores, labels, the profile, their one outcome row and that row without the
    confusion counts, as releases before them wrote it)."""
    rng = np.random.default_rng(seed)
    raw = rng.uniform(size=n)
    y = (rng.uniform(size=n) < raw).astype(int)
    cp = _profile(BINARY, [IsotonicMap()])
    (row,) = [r for r in fold(BINARY, arrow_from_records(BINARY, _labeled_records(
        BINARY, raw, y, np.zeros(n), None)), 1, {1: cp}, BUCKET) if r.kind == OUTCOME]
    meta, arrays = unpack(row.payload)
    old = pack(meta, {k: v for k, v in arrays.items() if k != "confusion"})
    return raw, y, cp, row, old


def test_an_outcome_without_the_counts_reads_as_not_known():
    raw, y, cp, row, old = _labeled_binary(7, 200)
    assert unpack_outcome(old).confusion is None
    assert unpack_outcome(merge([row, row._replace(payload=old)])[0].payload).confusion is None
    # a summary of no labeled pair is known (nothing counted), with or without the array
    unlabeled = pack_outcome(OutcomeSummary(n=5))
    assert unpack_outcome(unlabeled).confusion.size == 0
    total = unpack_outcome(unlabeled)
    total.add(unpack_outcome(row.payload))
    assert total.confusion.tolist() == confusion_counts(2, raw, y).tolist()

    th = Thresholds(min_n=10)
    known = performance(ROW, _window(unpack_outcome(row.payload), cp, raw), cp, th).to_dict()
    want = realized(2, raw, y)
    assert known["realized"] == pytest.approx({**want, "labeled": 200, "reason": None})
    assert {m["metric"]: m["realized"] for m in known["metrics"]} == pytest.approx(want)
    unknown = performance(ROW, _window(unpack_outcome(old), cp, raw), cp, th).to_dict()
    got = unknown["realized"]
    assert got["labeled"] == 200 and got["reason"].startswith("not available")
    assert got["accuracy"] == pytest.approx(want["accuracy"])  # from the error count
    assert got["precision"] is got["recall"] is got["f1"] is None
    none = performance(ROW, _window(OutcomeSummary(n=200), cp, raw), cp, th).to_dict()
    assert none["realized"]["labeled"] == 0 and none["realized"]["accuracy"] is None


def test_uploaded_confusion_counts_are_checked():
    _, _, _, row, without = _labeled_binary(8, 60)
    assert checked_outcome(row.payload, BINARY, 60, 10**7).confusion.sum() == 60
    assert checked_outcome(without, BINARY, 60, 10**7).confusion is None
    meta, arrays = unpack(row.payload)
    m = arrays["confusion"]
    moved = m.copy()  # one pair moved to the other label: still 60 pairs
    moved[0] += [-1, 1] if m[0, 0] else [1, -1]
    for bad, match in (
            (moved, "columns must be the label counts"),
            (np.zeros((3, 3), np.int64), "2 x 2 counts"),
            (m + 1, "adding up to the labeled pairs"),
            (m.astype(np.float64), "whole numbers"),
            (m.reshape(-1), "whole numbers")):
        with pytest.raises(PayloadError, match=match):
            checked_outcome(pack(meta, {**arrays, "confusion": bad}), BINARY, 60, 10**7)
    regression = ModelShape("regression", (), (), ())
    with pytest.raises(PayloadError):
        checked_outcome(row.payload, regression, 60, 10**7)
