"""Merged bucket summaries give what the statistics give on the raw rows.

Random windows (ties, missing values, categories unseen in the reference, constant columns,
cohorts with missing values, labels arriving with, before and after their predictions) are cut
into random buckets and batches, summarised, packed to bytes and back, merged in random order,
and evaluated; the reference is the library (and scipy) applied to the window's raw arrays.
No database here: tests/evaluation/test_evaluation_windows.py does the same through the API.
"""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pytest
from scipy import stats
from sklearn.metrics import (
    accuracy_score,
    confusion_matrix,
    f1_score,
    precision_score,
    recall_score,
)

from app.evaluation.checks.calibration import calibration
from app.evaluation.checks.cohorts import TASK, cohorts, overall_error
from app.evaluation.checks.drift import drift
from app.evaluation.checks.labels import label_stats
from app.evaluation.checks.performance import realized
from app.evaluation.counting import drift_summaries
from app.evaluation.packing import pack_drift, pack_outcome, unpack_drift, unpack_outcome
from app.evaluation.policy import Thresholds
from app.evaluation.profiles import build_profile
from app.evaluation.summaries import (
    KLL_RANK_ERROR,
    CompiledProfile,
    DriftSummary,
    ModelShape,
    OutcomeSummary,
    outcome_summary,
    prediction_values,
    rows_from_records,
)
from app.evaluation.windows import MergedWindow
from app.monitoring import (
    calibration_binary,
    calibration_multiclass,
    cohort_error,
    fit_categorical_bins,
    psi,
)
from app.monitoring.wrong import wrong as wrong_rule
from app.storage.registry import ModelRow

T0 = datetime(2026, 11, 24, 23, 30, tzinfo=UTC)  # windows straddle midnight (a partition edge)
BUCKET = 300.0
CLASSES = {"binary_classification": ["good", "bad"],
           "multiclass_classification": ["a", "b", "c"], "regression": None}


def model(task: str) -> ModelRow:
    return ModelRow(id=1, name="m", task=task,
                    features=[{"name": "x", "type": "numeric"},
                              {"name": "ties", "type": "numeric"},
                              {"name": "const", "type": "numeric"},
                              {"name": "cat", "type": "categorical"}],
                    cohort_keys=["region"], classes=CLASSES[task], created_at=T0)


def data(rng: np.random.Generator, n: int, task: str, shift: float = 0.0) -> dict:
    x = rng.normal(shift, 1.0, n)
    x[rng.random(n) < 0.05] = np.nan
    ties = np.round(rng.normal(shift, 1.0, n), 1)
    cats = rng.choice(["a", "b", "c", "new", None], size=n, p=[0.4, 0.3, 0.2, 0.05, 0.05])
    out = {"x": x, "ties": ties, "const": np.full(n, 2.5),
           "cat": np.array(cats, dtype=object),
           "region": rng.choice(["n", "s", "e", None], size=n, p=[0.4, 0.3, 0.2, 0.1])}
    if task == "binary_classification":
        out["score"] = rng.beta(2, 5, n)
        out["label"] = (rng.random(n) < out["score"]).astype(float)
    elif task == "multiclass_classification":
        p = rng.dirichlet([2, 1, 1], n)
        out["probs"] = p
        out["label"] = np.array([rng.choice(3, p=row) for row in p], dtype=float)
    else:
        out["value"] = rng.normal(10, 3, n)
        out["label"] = out["value"] + rng.normal(0, 1, n)
    return out


def reference(rng: np.random.Generator, m: ModelRow, sample_size: int) -> CompiledProfile:
    ref = data(rng, 3000, m.task)
    ref["cat"] = np.array(rng.choice(["a", "b", "c"], size=3000), dtype=object)
    shape = ModelShape.of(m)
    rows = rows_(shape, ref, np.zeros(3000), np.full(3000, np.nan))
    profile = build_profile(m, rows.features, prediction_values(shape, rows), rows.n,
                            n_bins=10, sample_size=sample_size)
    return CompiledProfile.compile(profile, "k")


def rows_(shape: ModelShape, d: dict, offsets: np.ndarray, label: np.ndarray,
          delays: np.ndarray | None = None):
    n = offsets.shape[0]
    classes = list(shape.classes)
    feats = [{"x": None if np.isnan(d["x"][i]) else float(d["x"][i]),
              "ties": float(d["ties"][i]), "const": float(d["const"][i]), "cat": d["cat"][i]}
             for i in range(n)]
    lc: list = [None] * n
    lv: list = [None] * n
    for i in range(n):
        if not np.isnan(label[i]):
            if shape.task == "regression":
                lv[i] = float(label[i])
            else:
                lc[i] = classes[int(label[i])]
    ts = T0.timestamp() + offsets
    delays = np.zeros(n) if delays is None else delays
    return rows_from_records(
        shape, [7] * n, ts.tolist(), feats, [{"region": r} for r in d["region"]],
        d["score"].tolist() if "score" in d else [None] * n,
        d["value"].tolist() if "value" in d else [None] * n,
        [dict(zip(classes, p.tolist(), strict=True)) for p in d["probs"]] if "probs" in d
        else [None] * n, lc, lv,
        [None if np.isnan(label[i]) else ts[i] + delays[i] for i in range(n)])


def merged_window(rng: np.random.Generator, m: ModelRow, cp: CompiledProfile, d: dict,
                  labeled: np.ndarray, delays: np.ndarray) -> MergedWindow:
    """The window's summaries as ingest would write them: predictions in random batches,
    a third of the labels inline, a third arriving before (joined when the prediction comes)
    and a third after (a pair-only summary); every part packed, unpacked and merged in a
    random order."""
    shape = ModelShape.of(m)
    n = d["label"].shape[0]
    offsets = np.sort(rng.uniform(0, 3600, n))
    later = labeled & (rng.random(n) < 1 / 3)
    with_prediction = labeled & ~later
    label_now = np.where(with_prediction, d["label"], np.nan)
    parts: list[bytes] = []
    order = rng.permutation(n)
    for batch in np.array_split(order, 7):
        rows = rows_(shape, {k: v[batch] for k, v in d.items()}, offsets[batch],
                     label_now[batch], delays[batch])
        bucket = np.floor(rows.ts / BUCKET).astype(np.int64)
        keys, group = np.unique(bucket, return_inverse=True)
        for g in range(keys.shape[0]):
            sub = rows.take(np.flatnonzero(group == g))
            parts.append(pack_outcome(outcome_summary(shape, sub, count_predictions=True)))
        for s in drift_summaries(shape, cp, rows, group, keys.shape[0]):
            parts.append(pack_drift(s))
    late = np.flatnonzero(later)
    for batch in np.array_split(rng.permutation(late), 3):
        rows = rows_(shape, {k: v[batch] for k, v in d.items()}, offsets[batch],
                     d["label"][batch], delays[batch])
        parts.append(pack_outcome(outcome_summary(shape, rows, count_predictions=False)))
    w = MergedWindow(7, T0, T0, OutcomeSummary(), DriftSummary("k", 0, np.zeros(cp.size,
                                                                                np.int64)))
    for i in rng.permutation(len(parts)):
        try:
            w.outcome.add(unpack_outcome(parts[i]))
        except (KeyError, ValueError):
            w.drift.add(unpack_drift(parts[i], "k"))
    return w


TH = Thresholds(min_n=30, cohort_min_n=20, gap_min_n=20)


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("task", list(CLASSES))
def test_merged_summaries_equal_the_statistics_on_raw_rows(seed: int, task: str):
    rng = np.random.default_rng(seed)
    m = model(task)
    sample_size = (50, 10_000)[seed % 2]  # subsampled and full reference samples
    cp = reference(rng, m, sample_size)
    n = int(rng.integers(40, 1500))
    d = data(rng, n, task, shift=0.3 * (seed % 3))
    labeled = rng.random(n) < 0.7
    delays = rng.exponential(600, n)
    w = merged_window(rng, m, cp, d, labeled, delays)
    assert w.n == n and w.drift.n == n and w.outcome.labeled == int(labeled.sum())

    # drift: bin counts, PSI, KS D and p against scipy on the raw values
    report = drift(w, cp, TH).to_dict()  # the JSON a report serves
    by_name = {f["feature"]: f for f in report["features"]}
    for col in cp.columns:
        if col.is_prediction:
            got = report["prediction"]
            values = {"binary_classification": d.get("score"), "regression": d.get("value"),
                      "multiclass_classification": np.array(
                          m.classes, dtype=object)[np.argmax(d["probs"], axis=1)]
                      if "probs" in d else None}[task]
        else:
            got = by_name[col.name]
            values = d[col.name]
        counts = col.binning.counts(values)
        assert got["current_counts"] == counts.tolist()
        expected = psi(col.reference_counts, counts, min_n=TH.min_n)
        assert got["psi"] == expected.value
        if col.ks is not None:
            x = np.asarray(values, dtype=float)
            x = x[np.isfinite(x)]
            if min(x.size, col.ks.sample.size) >= TH.min_n:
                ref = stats.ks_2samp(col.ks.sample, x)
                assert got["ks_statistic"] == float(ref.statistic)
                assert got["ks_pvalue"] == pytest.approx(float(ref.pvalue), rel=1e-12)
            else:
                assert got["ks_statistic"] is None

    # calibration at several bin counts
    y = d["label"][labeled]
    for bins in (10, 7, 100):
        got = calibration(m, w, TH, bins).to_dict()
        if task == "regression":
            assert got["status"] == "not_applicable"
            break
        ref = (calibration_binary(d["score"][labeled], y, bins, min_n=TH.min_n)
               if task == "binary_classification"
               else calibration_multiclass(d["probs"][labeled], y, bins, min_n=TH.min_n))
        assert got["n"] == ref.n
        assert [b["count"] for b in got["bins"]] == [b.count for b in ref.bins]
        for key in ("ece", "mce", "brier"):
            assert got[key] == pytest.approx(getattr(ref, key), rel=1e-12, abs=1e-15)
        assert got["reason"] == ref.reason

    # cohorts
    preds = {"binary_classification": d.get("score"), "regression": d.get("value"),
             "multiclass_classification": d.get("probs")}[task]
    kind = TASK[task]
    got = cohorts(m, w, TH).to_dict()["region"]
    ref = cohort_error(d["region"], preds, np.where(labeled, d["label"], np.nan), task=kind,
                       min_n=TH.cohort_min_n).to_dict()
    assert got["n"] == ref["n"] and got["n_dropped"] == ref["n_dropped"]
    assert [c["cohort"] for c in got["cohorts"]] == [c["cohort"] for c in ref["cohorts"]]
    for a, b in zip([got["overall"], *got["cohorts"]], [ref["overall"], *ref["cohorts"]],
                    strict=True):
        for k, v in b.items():
            if isinstance(v, float):
                assert a[k] == pytest.approx(v, rel=1e-12, abs=1e-15), k
            else:
                assert a[k] == v, k

    # realized metrics beside the CBPE estimate: the confusion counts of the labeled pairs
    # (inline, before and after their predictions) against scikit-learn on the raw rows
    truth = realized(w)
    if task == "regression":
        assert w.outcome.confusion.size == 0
    elif labeled.any():
        k = len(m.classes)
        predicted = (d["score"][labeled] >= 0.5).astype(int) if k == 2 else np.argmax(
            d["probs"][labeled], axis=1)
        assert w.outcome.confusion.tolist() == confusion_matrix(
            y, predicted, labels=list(range(k))).T.tolist()
        options = {"average": "binary"} if k == 2 else {"average": "macro",
                                                         "labels": list(range(k))}
        assert truth.labeled == labeled.sum() and truth.reason is None
        assert truth.accuracy == pytest.approx(accuracy_score(y, predicted), rel=1e-12)
        for name, score in (("precision", precision_score), ("recall", recall_score),
                            ("f1", f1_score)):
            want = float(score(y, predicted, zero_division=np.nan, **options))
            got = getattr(truth, name)
            assert got == pytest.approx(want, rel=1e-12) if got is not None else np.isnan(
                want), name

    # labels: coverage exact, delays within the sketch's rank error
    got = label_stats(w, TH).to_dict()
    assert got["label_coverage"] == labeled.sum() / n
    lab_delays = np.sort(delays[labeled])
    for q, key in ((0.5, "label_delay_p50_seconds"), (0.9, "label_delay_p90_seconds")):
        if lab_delays.size <= 200:  # the sketch keeps every value: exact (to the microsecond
            # that epoch-second floats keep)
            assert got[key] == pytest.approx(
                np.quantile(lab_delays, q, method="inverted_cdf"), abs=1e-6)
        else:
            rank = np.searchsorted(lab_delays, got[key], side="right") / lab_delays.size
            assert abs(rank - q) <= KLL_RANK_ERROR


def test_categories_unseen_in_the_reference_share_one_bin():
    rng = np.random.default_rng(1)
    m = model("binary_classification")
    cp = reference(rng, m, 1000)
    cat = next(c for c in cp.columns if c.name == "cat")
    assert cat.binning == fit_categorical_bins(["a", "b", "c"])
    d = data(rng, 500, m.task)
    w = merged_window(rng, m, cp, d, np.zeros(500, bool), np.zeros(500))
    got = {f.feature: f for f in drift(w, cp, TH).features}["cat"]
    assert got.bins[-2:] == ("(unseen)", "missing")
    assert got.current_counts[-2] == int(np.sum(d["cat"] == "new"))
    assert got.current_counts[-1] == int(np.sum(np.equal(d["cat"], None)))


def test_a_summary_does_not_grow_with_the_rows_it_counts():
    rng = np.random.default_rng(2)
    m = model("binary_classification")
    cp = reference(rng, m, 10_000)
    shape = ModelShape.of(m)
    sizes = []
    for n in (20_000, 200_000):
        d = data(rng, n, m.task)
        rows = rows_(shape, d, np.zeros(n), d["label"])
        s = drift_summaries(shape, cp, rows, np.zeros(n, np.int64), 1)[0]
        o = outcome_summary(shape, rows, count_predictions=True)
        sizes.append(len(pack_drift(s)) + len(pack_outcome(o)))
    # the same slots and bins whatever the count (compression makes the bytes vary a little)
    assert sizes[1] < 1.5 * sizes[0]


def test_cohorts_beyond_the_cap_are_folded_and_the_total_is_kept():
    m = model("binary_classification")
    shape = ModelShape.of(m)
    n = 600
    d = data(np.random.default_rng(3), n, m.task)
    d["region"] = np.array([f"r{i % 300}" for i in range(n)], dtype=object)
    o = outcome_summary(shape, rows_(shape, d, np.zeros(n), d["label"]),
                        count_predictions=True)
    before = o.cohorts["region"]
    o.cap_cohorts(10)
    after = o.cohorts["region"]
    assert len(after.cohorts) == 10 and after.cohorts[-1] == "(other)"
    assert after.n.sum() == before.n.sum() == n
    assert after.first.sum() == before.first.sum()


@pytest.mark.parametrize("task", ["binary_classification", "regression"])
def test_overall_error_sums_are_kept_without_cohort_keys_and_merge_exactly(task: str):
    """A model without cohort keys: the outcome keeps the overall error sums; packed in
    parts, unpacked and merged they give the error rate (MAE, RMSE) of the raw rows. A
    payload written before they were kept gives them from its first cohort key exactly,
    and none without one."""
    from dataclasses import replace

    from app.evaluation.packing import pack, unpack

    rng = np.random.default_rng(11)
    m = replace(model(task), cohort_keys=[])
    shape = ModelShape.of(m)
    n = 900
    d = data(rng, n, task)
    label = np.where(rng.random(n) < 0.8, d["label"], np.nan)
    total = OutcomeSummary()
    for part in np.array_split(np.arange(n), 4):
        rows = rows_(shape, {k: v[part] for k, v in d.items()}, np.zeros(part.size),
                     label[part])
        o = unpack_outcome(pack_outcome(outcome_summary(shape, rows, count_predictions=True)))
        assert o.cohorts == {}
        total.add(o)
    seen = ~np.isnan(label)
    w = MergedWindow(7, T0, T0, total, DriftSummary("k", 0, np.zeros(1, np.int64)))
    r = overall_error(m, w)
    assert r.n == int(seen.sum())
    if task == "regression":
        e = d["value"][seen] - d["label"][seen]
        assert r.mae == pytest.approx(np.abs(e).mean(), rel=1e-12)
        assert r.rmse == pytest.approx(np.sqrt((e * e).mean()), rel=1e-12)
    else:
        wrong = wrong_rule(shape.task, d["score"][seen], d["label"][seen])
        assert r.error_rate == wrong.sum() / seen.sum()

    # an earlier payload: no "errors" in its header
    keyed = ModelShape.of(model(task))
    rows = rows_(keyed, d, np.zeros(n), label)
    meta, arrays = unpack(pack_outcome(outcome_summary(keyed, rows, count_predictions=True)))
    errors, squares = meta.pop("errors"), meta.pop("squares")
    old = unpack_outcome(pack(meta, arrays))
    assert (old.errors, old.squares) == pytest.approx((errors, squares), rel=1e-12)
    meta["cohorts"] = {}
    old = unpack_outcome(pack(meta, {k: v for k, v in arrays.items() if not k[1:2].isdigit()}))
    assert old.errors is None and overall_error(m, MergedWindow(
        7, T0, T0, old, DriftSummary("k", 0, np.zeros(1, np.int64)))) is None


@pytest.mark.parametrize("task", ["binary_classification", "multiclass_classification"])
def test_each_cohort_keeps_its_sum_of_scores_and_positives_through_every_step(task: str):
    """Per cohort, the sum of scores (top-label confidences) and the positives (correct top
    labels) by hand; packed in parts, unpacked and merged, and capped, they add up to the
    same. A payload written before they were kept reads as not knowing them, and a window
    merged with one does not know them either."""
    from app.evaluation.packing import pack, unpack

    rng = np.random.default_rng(26)
    m = model(task)
    shape = ModelShape.of(m)
    n = 800
    d = data(rng, n, task)
    label = np.where(rng.random(n) < 0.7, d["label"], np.nan)
    seen = ~np.isnan(label)
    if task == "binary_classification":
        score, hit = d["score"], d["label"] == 1
    else:
        score, hit = d["probs"].max(axis=1), d["probs"].argmax(axis=1) == d["label"]
    total = OutcomeSummary()
    for part in np.array_split(np.arange(n), 3):
        rows = rows_(shape, {k: v[part] for k, v in d.items()}, np.zeros(part.size),
                     label[part])
        total.add(unpack_outcome(pack_outcome(outcome_summary(shape, rows,
                                                              count_predictions=True))))
    c = total.cohorts["region"]
    for i, name in enumerate(c.cohorts):
        inside = seen & np.array([r == name for r in d["region"]])
        assert c.scores[i] == pytest.approx(score[inside].sum(), rel=1e-12)
        assert c.positives[i] == hit[inside].sum()
    capped = OutcomeSummary()
    capped.add(total)
    capped.cap_cohorts(2)
    k = capped.cohorts["region"]
    assert k.cohorts[-1] == "(other)"
    assert k.scores.sum() == pytest.approx(c.scores.sum(), rel=1e-12)
    assert k.positives.sum() == c.positives.sum()
    # an earlier payload: no c0_s / c0_o
    meta, arrays = unpack(pack_outcome(total))
    old = unpack_outcome(pack(meta, {a: v for a, v in arrays.items()
                                     if a not in ("c0_s", "c0_o")}))
    assert old.cohorts["region"].scores is None and old.cohorts["region"].positives is None
    mixed = OutcomeSummary()
    mixed.add(total)
    mixed.add(old)
    assert mixed.cohorts["region"].scores is None
    assert mixed.cohorts["region"].n.sum() == 2 * c.n.sum()


def test_a_regression_keeps_no_cohort_sums_of_scores():
    m = model("regression")
    shape = ModelShape.of(m)
    d = data(np.random.default_rng(2), 200, m.task)
    o = unpack_outcome(pack_outcome(outcome_summary(
        shape, rows_(shape, d, np.zeros(200), d["label"]), count_predictions=True)))
    assert o.cohorts["region"].scores is None and o.cohorts["region"].positives is None
