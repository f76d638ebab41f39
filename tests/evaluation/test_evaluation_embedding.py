"""Embedding drift through the summaries: the reference profile's whitening basis, the sums in
the drift layout folded by the kernel in any split (records or Arrow, list or fixed-size
list), packed, merged and imported exactly, equal to the sums computed directly on the raw
vectors; and the check deciding on them (a mean shift of 0.5 sd critical, a stationary
window ok, a small window insufficient, a profile without a basis not applicable)."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pyarrow as pa
import pytest

from app.evaluation import horizon
from app.evaluation.checks.embedding import embedding, findings, subject
from app.evaluation.counting import drift_summaries
from app.evaluation.embeddings import arrow_vectors
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
from app.monitoring.embedding import OFFSET, SCALE, EmbeddingBasis, embedding_shift
from app.monitoring.gates import embedding_min_support, embedding_noise_quantile
from app.settings import Settings
from app.storage.registry import ModelRow
from app.storage.summaries import DRIFT, SummaryRow

T0 = datetime(2026, 1, 1, tzinfo=UTC)
DIM = 6
MODEL = ModelRow(id=1, name="emb", task="regression",
                 features=[{"name": "a", "type": "numeric"},
                           {"name": "vec", "type": "embedding", "dim": DIM}],
                 cohort_keys=[], classes=None, created_at=T0)
SHAPE = ModelShape.of(MODEL)
MIX = np.random.default_rng(11).normal(size=(DIM, DIM))


def rows(rng: np.random.Generator, n: int, shift: float = 0.0) -> Rows:
    """Correlated vectors (``shift`` reference sd along the first principal direction of a
    diagonal spread 2, 1, ..., mixed), 1 in 13 missing; a numeric feature."""
    z = rng.normal(size=(n, DIM)) * np.linspace(2, 0.5, DIM)
    z[:, 0] += shift * 2
    x = z @ MIX
    x[::13] = np.nan
    out = Rows(version_id=np.ones(n, dtype=np.int64), ts=np.full(n, T0.timestamp()))
    out.features = {"a": rng.normal(size=n), "vec": x}
    out.value = rng.normal(size=n)
    return out


def profile(seed: int = 1) -> CompiledProfile:
    ref = rows(np.random.default_rng(seed), 5000)
    return CompiledProfile.compile(build_profile(MODEL, ref.features, None, ref.n), "k")


def window(d: DriftSummary) -> MergedWindow:
    return MergedWindow(1, T0, T0, OutcomeSummary(n=d.n), d)


def direct_sums(cp: CompiledProfile, x: np.ndarray) -> list[int]:
    b = cp.embeddings.layouts[0].basis
    x = x[np.isfinite(x).all(axis=1)]
    z = np.clip(np.rint((x - b.mean) @ b.whiten.T * SCALE), -OFFSET, OFFSET) + OFFSET
    return [x.shape[0], *z.sum(axis=0).astype(np.int64).tolist()]


def test_the_profile_holds_a_basis_and_the_layout_its_sums() -> None:
    cp = profile()
    (lay,) = cp.embeddings.layouts
    assert lay.basis.feature == "vec" and lay.basis.dim == DIM
    assert [c.name for c in cp.columns] == ["a"]  # no PSI or KS column for the embedding
    assert cp.pca is None  # one numeric feature: no multivariate basis
    assert lay.offset == cp.pca_offset or lay.offset == max(
        c.ks_offset + c.ks.n_slots for c in cp.columns if c.ks)
    assert cp.size == lay.offset + lay.basis.slots
    ref = rows(np.random.default_rng(1), 5000)
    old = build_profile(MODEL, ref.features, None, ref.n)
    del old["embeddings"]
    cp_old = CompiledProfile.compile(old, "old")
    assert cp_old.embeddings.layouts == () and cp_old.size == lay.offset
    small = build_profile(MODEL, {k: v[:150] for k, v in ref.features.items()}, None, 150)
    assert "at least 200" in small["embeddings"]["vec"]["reason"]
    r = embedding(window(DriftSummary("s", 0, np.zeros(1, np.int64))),
                  CompiledProfile.compile(small, "s"), Thresholds.from_settings(Settings()))
    (s,) = r.features
    assert s.to_dict()["status"] == "not_applicable" and findings(r) == []


def test_sums_fold_exactly_in_any_split_and_path() -> None:
    cp = profile()
    lay = cp.embeddings.layouts[0]
    r = rows(np.random.default_rng(2), 900, shift=0.3)
    group = np.random.default_rng(3).integers(0, 4, size=r.n)
    parts = drift_summaries(SHAPE, cp, r, group, 4)
    total = DriftSummary(cp.key, 0, np.zeros(cp.size, np.int64))
    for p in parts:
        total.add(unpack_drift(pack_drift(p), cp.key))
    assert total.slice(lay.offset, lay.basis.slots).tolist() == direct_sums(
        cp, r.features["vec"])
    whole = drift_summaries(SHAPE, cp, r, np.zeros(r.n, np.int64), 1)[0]
    assert (whole.counts == total.counts).all()
    (merged,) = merge([SummaryRow(1, T0, DRIFT, cp.key, p.n, pack_drift(p))
                       for p in reversed(parts)])
    assert (unpack_drift(merged.payload, cp.key).counts == total.counts).all()
    # the Arrow path (a lake, Spark, the summarizing client) gives the same slots
    vec = r.features["vec"]
    records = [{"timestamp": T0, "features": {
        "a": float(r.features["a"][i]),
        "vec": None if np.isnan(vec[i]).any() else vec[i].tolist()},
        "prediction": {"value": float(r.value[i])}} for i in range(r.n)]
    folded = merge(fold(SHAPE, arrow_from_records(SHAPE, records), 1, {1: cp}, 3600.0))
    (drift_row,) = [x for x in folded if x.kind == "drift"]
    assert (unpack_drift(drift_row.payload, cp.key).counts == total.counts).all()


def test_arrow_vectors_read_lists_and_refuse_what_is_not_one() -> None:
    rows_ = [[1.0, 2.0], None, [3.0, 4.0]]
    for t in (pa.list_(pa.float64()), pa.large_list(pa.float32()), pa.list_(pa.int64(), 2)):
        x, problem = arrow_vectors(pa.array([None if v is None else [int(e) for e in v]
                                             for v in rows_], t), 3)
        assert problem == "" and np.isnan(x[1]).all(), t
        assert x[[0, 2]].tolist() == [[1, 2], [3, 4]]
    assert "another length" in arrow_vectors(pa.array([[1.0], [1.0, 2.0]]), 2)[1]
    assert "another length" in arrow_vectors(pa.array([[1.0, 2.0]]), 1, dim=3)[1]
    assert "non-finite" in arrow_vectors(pa.array([[1.0, None]]), 1)[1]
    assert "non-finite" in arrow_vectors(pa.array([[1.0, float("nan")]]), 1)[1]
    assert "list of numbers" in arrow_vectors(pa.array(["a"]), 1)[1]
    assert "list of numbers" in arrow_vectors(pa.array([["a", "b"]]), 1)[1]


def test_an_import_with_impossible_sums_is_refused() -> None:
    cp = profile()
    lay = cp.embeddings.layouts[0]
    r = rows(np.random.default_rng(4), 300)
    d = drift_summaries(SHAPE, cp, r, np.zeros(r.n, np.int64), 1)[0]
    assert (checked_drift(pack_drift(d), cp, 300, 1 << 20).counts == d.counts).all()
    for slot, value, message in ((0, 301, "301 vectors"), (1, 10**9, "whitened vectors")):
        bad = DriftSummary(cp.key, d.n, d.counts.copy())
        bad.counts[lay.offset + slot] = value
        with pytest.raises(PayloadError, match=message):
            checked_drift(pack_drift(bad), cp, 300, 1 << 20)


def test_a_half_sd_shift_is_critical_and_stationary_is_ok() -> None:
    cp = profile()
    th = Thresholds.from_settings(Settings())
    rng = np.random.default_rng(5)
    for shift, expected in ((0.0, "ok"), (0.5, "critical")):
        r = rows(rng, 1000, shift)
        d = drift_summaries(SHAPE, cp, r, np.zeros(r.n, np.int64), 1)[0]
        report = embedding(window(d), cp, th)
        (s,) = report.features
        assert s.decision == expected, s.to_dict()
    out = s.to_dict()
    assert 0.35 < out["effect"] < 0.65 and out["pvalue"] < 1e-10 and out["gate"] == "threshold"
    assert out["n"] == 1000 - len(range(0, 1000, 13))
    (effect, pvalue) = findings(report)
    assert (effect.metric, effect.subject, effect.value, effect.decision) == (
        "embedding_shift", "vec", out["effect"], "critical")
    assert pvalue.metric == "embedding_shift_pvalue" and pvalue.value == out["pvalue"]
    # at 923 vectors the warning line is the noise quantile (above 0.1), the critical 0.25
    b = cp.embeddings.layouts[0].basis
    k, n_ref = b.components, b.n_reference
    assert effect.detail["lines"] == {
        "warning": embedding_noise_quantile(923, n_ref, k, 1e-3), "warning_gate": "noise_quantile",
        "critical": 0.25, "critical_gate": "threshold"}
    assert effect.detail["min_support"] == embedding_min_support(0.25, n_ref, k, 1e-4) < 923
    assert report.lines == {"warning": 0.1, "critical": 0.25}


def test_a_small_window_is_insufficient_and_moves_to_the_longer_horizon() -> None:
    cp = profile()
    th = Thresholds.from_settings(Settings())
    rng = np.random.default_rng(6)

    def report(n: int):
        r = rows(rng, n, 0.5)
        return embedding(window(drift_summaries(SHAPE, cp, r, np.zeros(n, np.int64), 1)[0]),
                         cp, th)

    small, long = report(50), report(2000)
    assert small.features[0].decision == "insufficient_data"
    assert horizon.EMBEDDING.too_small(small)
    short, moved = horizon.EMBEDDING.split(small, long, 86_400.0)
    assert short.features == () and moved.features[0].decision == "critical"
    assert findings(moved)[0].detail["horizon_seconds"] == 86_400.0


def test_below_the_minimum_support_a_shift_is_undecided_and_moves_to_the_longer_horizon(
        ) -> None:
    # 300 vectors shifted 0.5 sd: the chi-square p-value is far below alpha_critical and the
    # effect far past 0.25, so without the minimum support this window paged; with 6
    # directions and about 2,300 held-out rows the critical line leaves the noise at 413
    cp = profile()
    th = Thresholds.from_settings(Settings())
    b = cp.embeddings.layouts[0].basis
    support = embedding_min_support(0.25, b.n_reference, b.components, 1e-4)
    assert 300 < support < 600
    rng = np.random.default_rng(7)

    def report(n: int):
        r = rows(rng, n, 0.5)
        return embedding(window(drift_summaries(SHAPE, cp, r, np.zeros(n, np.int64), 1)[0]),
                         cp, th)

    small = report(300)
    (s,) = small.features
    assert s.result is not None and s.result.effect > 0.25 and s.result.pvalue < 1e-6
    assert (s.decision, s.gate, s.min_support) == ("insufficient_data", "min_support", support)
    assert f"minimum support ({support})" in s.to_dict()["decision_reason"]
    assert horizon.EMBEDDING.too_small(small)
    short, moved = horizon.EMBEDDING.split(small, report(3000), 86_400.0)
    assert short.features == () and moved.features[0].decision == "critical"
    assert moved.features[0].horizon_seconds == 86_400.0


def test_the_rule_by_hand() -> None:
    # k = 2, reference mean 0, precision the identity, 10,000 held-out rows: the critical
    # line (0.25 at alpha 1e-4; chi2_2 isf = 2 ln 1e4) leaves the noise at n = 270
    basis = EmbeddingBasis("e", 2, np.zeros(2), np.eye(2), 1.0, 10_000, np.zeros(2),
                           np.eye(2))
    th = Thresholds.from_settings(Settings())

    def at(n: int, d: tuple[float, float]):
        sums = np.array([n, *(n * (OFFSET + x * SCALE) for x in d)])
        return subject(basis, embedding_shift(basis, sums, th.min_n), th)

    # a mean 0.5 sd away at n = 100: T = 0.25 / 0.0101 = 24.75, p = exp(-T / 2) = 4e-6,
    # effect sqrt(0.25 - 0.0202) = 0.48: a page on the old rule, undecided now
    s = at(100, (0.5, 0.0))
    assert s.result.pvalue == pytest.approx(np.exp(-0.25 / 0.0101 / 2))
    assert s.result.effect == pytest.approx(np.sqrt(0.25 - 2 * 0.0101))
    assert (s.decision, s.gate, s.min_support, s.lines) == (
        "insufficient_data", "min_support", 270, None)
    # at 270 the same shift pages on its line; the warning line is the noise quantile:
    # sqrt((1/270 + 1e-4) (2 ln 1e3 - 2)) = 0.212
    s = at(270, (0.5, 0.0))
    assert (s.decision, s.gate) == ("critical", "threshold")
    assert s.lines["warning"] == pytest.approx(
        np.sqrt((1 / 270 + 1e-4) * (2 * np.log(1e3) - 2)), rel=1e-9)
    assert s.lines["warning_gate"] == "noise_quantile"
    assert s.lines["critical"] == 0.25 and s.lines["critical_gate"] == "threshold"
    # 0.25 sd at 270: effect sqrt(0.0625 - 2 (1/270 + 1e-4)) = 0.22: above the warning
    # line with p = exp(-8.2) = 2.7e-4 < 1e-3, a ticket
    s = at(270, (0.25, 0.0))
    assert (s.decision, s.gate) == ("warning", "noise_quantile")
    # below min_n the older gate stays, and also moves to the longer horizon
    s = at(99, (0.5, 0.0))
    assert (s.decision, s.gate) == ("insufficient_data", "min_n")
