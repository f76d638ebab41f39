"""CBPE sums in the summaries: folded per bucket with the profile's calibration maps, equal to
the estimator's on the same rows, exact under merge in any split, unknown where a payload
predates them, and checked when a client uploads them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from app.evaluation import cbpe
from app.evaluation.fold import arrow_from_records, fold, merge
from app.evaluation.imported import checked_drift
from app.evaluation.packing import (
    PayloadError,
    pack,
    pack_drift,
    unpack,
    unpack_drift,
)
from app.evaluation.summaries import CompiledProfile, DriftSummary, ModelShape
from app.monitoring.cbpe import IsotonicMap, cbpe_sums, estimate
from app.storage.summaries import DRIFT

T0 = datetime(2026, 3, 2, tzinfo=UTC)
BUCKET = 600.0
BINARY = ModelShape("binary_classification", (), (), ("no", "yes"))
MULTI = ModelShape("multiclass_classification", (), (), ("a", "b", "c"))


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
