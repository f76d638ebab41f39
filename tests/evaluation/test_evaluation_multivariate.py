"""Multivariate drift through the summaries: the reference profile's PCA basis, the error sums
in the drift layout's last slots folded by the kernel in any split (Arrow or records), packed,
merged and imported exactly, equal to the errors computed directly on the raw rows; and the
check deciding on them (a correlation flip with unchanged marginals critical, the univariate
columns quiet; a stationary window ok; a profile without a basis not applicable)."""

from __future__ import annotations

import math
from datetime import UTC, datetime

import numpy as np
import pytest

from app.evaluation.checks.drift import drift
from app.evaluation.checks.multivariate import findings, multivariate
from app.evaluation.counting import drift_summaries
from app.evaluation.fold import arrow_from_records, fold, merge
from app.evaluation.imported import checked_drift
from app.evaluation.packing import PayloadError, pack_drift, unpack_drift
from app.evaluation.policy import Thresholds
from app.evaluation.profiles import build_profile
from app.evaluation.summaries import (
    CompiledProfile,
    DriftSummary,
    ModelShape,
    OutcomeSummary,
    Rows,
)
from app.evaluation.windows import MergedWindow
from app.monitoring.multivariate import QUANTUM, SUM_SLOTS
from app.settings import Settings
from app.storage.registry import ModelRow
from app.storage.summaries import DRIFT, SummaryRow

T0 = datetime(2026, 1, 1, tzinfo=UTC)
MODEL = ModelRow(id=1, name="mv", task="regression",
                 features=[{"name": "a", "type": "numeric"}, {"name": "b", "type": "numeric"},
                           {"name": "c", "type": "numeric"},
                           {"name": "kind", "type": "categorical"}],
                 cohort_keys=[], classes=None, created_at=T0)
SHAPE = ModelShape.of(MODEL)


def rows(rng: np.random.Generator, n: int, rho: float = 0.7) -> Rows:
    """a and b standard normal with correlation ``rho``, c independent, a category."""
    a = rng.normal(size=n)
    b = rho * a + math.sqrt(1 - rho * rho) * rng.normal(size=n)
    out = Rows(version_id=np.ones(n, dtype=np.int64), ts=np.full(n, T0.timestamp()))
    out.features = {"a": a, "b": b, "c": rng.normal(size=n),
                    "kind": rng.choice(np.array(["x", "y"], dtype=object), size=n)}
    out.value = a + b
    return out


def profile(seed: int = 1) -> CompiledProfile:
    ref = rows(np.random.default_rng(seed), 5000)
    return CompiledProfile.compile(build_profile(MODEL, ref.features, None, ref.n), "k")


def window(cp: CompiledProfile, d: DriftSummary) -> MergedWindow:
    return MergedWindow(1, T0, T0, OutcomeSummary(n=d.n), d)


def direct_sums(cp: CompiledProfile, r: Rows) -> list[int]:
    """(n, sum q, sum q^2) computed directly on the raw rows."""
    b = cp.pca
    assert b is not None
    x = np.column_stack([r.features[f] for f in b.features])
    z = np.nan_to_num((x - b.mean) / b.scale)
    e = np.sqrt(np.maximum((z * z).sum(1) - ((z @ b.components) ** 2).sum(1), 0))
    q = np.minimum(np.rint(e / QUANTUM), b.cap)
    return [r.n, int(q.sum()), int((q * q).sum())]


def test_the_profile_holds_a_basis_and_the_layout_its_sums() -> None:
    cp = profile()
    assert cp.pca is not None and cp.pca.features == ("a", "b", "c")
    assert cp.pca_offset == cp.size - SUM_SLOTS
    assert cp.pca_offset == max(c.ks_offset + (c.ks.n_slots if c.ks else 0)
                                for c in cp.columns)
    # a profile stored before: no basis, the layout it always had, and why
    ref = rows(np.random.default_rng(1), 5000)
    old = build_profile(MODEL, ref.features, None, ref.n)
    del old["multivariate"]
    cp_old = CompiledProfile.compile(old, "old")
    assert cp_old.pca is None and cp_old.size == cp.pca_offset
    assert "predates multivariate drift" in cp_old.pca_reason
    r = multivariate(window(cp_old, DriftSummary("old", 0, np.zeros(cp_old.size, np.int64))),
                     cp_old, Thresholds.from_settings(Settings()))
    assert r.to_dict()["status"] == "not_applicable" and findings(r) == []


def test_sums_fold_exactly_in_any_split_and_path() -> None:
    cp = profile()
    r = rows(np.random.default_rng(2), 900)
    r.features["a"][::7] = np.nan  # missing: the reference's mean
    group = np.random.default_rng(3).integers(0, 4, size=r.n)
    parts = drift_summaries(SHAPE, cp, r, group, 4)
    total = DriftSummary(cp.key, 0, np.zeros(cp.size, np.int64))
    for p in parts:
        total.add(unpack_drift(pack_drift(p), cp.key))
    assert total.slice(cp.pca_offset, SUM_SLOTS).tolist() == direct_sums(cp, r)
    whole = drift_summaries(SHAPE, cp, r, np.zeros(r.n, np.int64), 1)[0]
    assert (whole.counts == total.counts).all()
    # compaction, roll-up and the Spark adapter merge packed rows (merged_payload)
    (merged,) = merge([SummaryRow(1, T0, DRIFT, cp.key, p.n, pack_drift(p))
                       for p in reversed(parts)])
    assert merged.n == r.n
    assert (unpack_drift(merged.payload, cp.key).counts == total.counts).all()
    # the Arrow path (a lake, Spark, the summarizing client) gives the same slots
    records = [{"timestamp": T0, "features": {k: (None if isinstance(v[i], float)
                                                  and np.isnan(v[i]) else v[i])
                                              for k, v in r.features.items()},
                "prediction": {"value": float(r.value[i])}} for i in range(r.n)]
    folded = merge(fold(SHAPE, arrow_from_records(SHAPE, records), 1, {1: cp}, 3600.0))
    drift_rows = [x for x in folded if x.kind == "drift"]
    assert len(drift_rows) == 1
    assert (unpack_drift(drift_rows[0].payload, cp.key).counts == total.counts).all()


def test_an_import_with_impossible_sums_is_refused() -> None:
    cp = profile()
    r = rows(np.random.default_rng(4), 300)
    d = drift_summaries(SHAPE, cp, r, np.zeros(r.n, np.int64), 1)[0]
    assert (checked_drift(pack_drift(d), cp, 300, 1 << 20).counts == d.counts).all()
    for slot, value, message in ((0, 299, "count 299"), (1, 10**12, "whole errors"),
                                 (2, 0, "whole errors")):
        bad = DriftSummary(cp.key, d.n, d.counts.copy())
        bad.counts[cp.pca_offset + slot] = value
        with pytest.raises(PayloadError, match=message):
            checked_drift(pack_drift(bad), cp, 300, 1 << 20)


def test_a_correlation_flip_is_critical_while_the_columns_stay_quiet() -> None:
    cp = profile()
    th = Thresholds.from_settings(Settings())
    rng = np.random.default_rng(5)
    for rho, expected in ((0.7, "ok"), (-0.7, "critical")):
        r = rows(rng, 1000, rho)
        d = drift_summaries(SHAPE, cp, r, np.zeros(r.n, np.int64), 1)[0]
        report = multivariate(window(cp, d), cp, th)
        assert report.decision == expected, report.to_dict()
        columns = drift(window(cp, d), cp, th)
        assert all(f.decision == "ok" for f in columns.features), [
            (f.feature, f.decision) for f in columns.features]
    out = report.to_dict()
    assert out["effect"] > 1 and out["pvalue"] < 1e-10 and out["components"] >= 1
    assert out["features"] == ["a", "b", "c"] and out["gate"] == "z_test"
    (effect, mean) = findings(report)
    assert (effect.metric, effect.value, effect.decision) == (
        "multivariate_pca_error", out["effect"], "critical")
    assert mean.metric == "multivariate_pca_error_mean" and mean.n == 1000


def test_a_small_window_is_insufficient() -> None:
    cp = profile()
    r = rows(np.random.default_rng(6), 50, -0.7)
    d = drift_summaries(SHAPE, cp, r, np.zeros(r.n, np.int64), 1)[0]
    report = multivariate(window(cp, d), cp, Thresholds.from_settings(Settings()))
    assert report.decision == "insufficient_data" and report.gate == "min_n"


def test_a_window_too_small_is_decided_over_the_longer_horizon() -> None:
    from app.evaluation import horizon

    cp = profile()
    th = Thresholds.from_settings(Settings())
    rng = np.random.default_rng(7)
    small = multivariate(window(cp, drift_summaries(SHAPE, cp, rows(rng, 50, -0.7),
                                                    np.zeros(50, np.int64), 1)[0]), cp, th)
    long = multivariate(window(cp, drift_summaries(SHAPE, cp, rows(rng, 2000, -0.7),
                                                   np.zeros(2000, np.int64), 1)[0]), cp, th)
    assert horizon.MULTIVARIATE.too_small(small)
    short, moved = horizon.MULTIVARIATE.split(small, long, 86_400.0)
    assert short is None and moved.decision == "critical"
    assert moved.to_dict()["horizon_seconds"] == 86_400.0
    assert findings(moved)[0].detail["horizon_seconds"] == 86_400.0
