"""The summarizing kernel: an Arrow batch folds into the same summaries as the ingest path's
records, in any split and order, and merge is exact."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from app.errors import Invalid
from app.evaluation.fold import coded, fold, merge, rows_from_arrow, summary_rows
from app.evaluation.packing import unpack_drift, unpack_outcome
from app.evaluation.summaries import ModelShape
from app.monitoring.binning import categorical_codes
from app.storage.summaries import DRIFT
from tests.evaluation.test_evaluation_summaries import (
    BUCKET,
    CLASSES,
    T0,
    data,
    model,
    reference,
    rows_,
)


def arrow_table(shape: ModelShape, d: dict, offsets: np.ndarray, label: np.ndarray,
                delays: np.ndarray) -> pa.Table:
    """The same rows as ``rows_`` builds from records, as the kernel's Arrow columns."""
    ts = pa.array(((T0.timestamp() + offsets) * 1e6).round().astype(np.int64),
                  pa.timestamp("us", "UTC"))
    labeled = ~np.isnan(label)
    label_ts = np.where(labeled, (T0.timestamp() + offsets + delays) * 1e6, 0).round()
    cols = {"timestamp": ts,
            "x": pa.array(d["x"], from_pandas=True),  # NaN: missing
            "ties": pa.array(d["ties"]), "const": pa.array(d["const"]),
            "cat": pa.array(list(d["cat"]), pa.string()),
            "region": pa.array(list(d["region"]), pa.string()).dictionary_encode(),
            "label_timestamp": pa.array(label_ts.astype(np.int64), pa.timestamp("us", "UTC"),
                                        mask=~labeled)}
    if shape.task == "binary_classification":
        cols["score"] = pa.array(d["score"])
    elif shape.task == "regression":
        cols["value"] = pa.array(d["value"])
    else:
        cols["probabilities"] = pa.StructArray.from_arrays(
            [pa.array(d["probs"][:, j]) for j in range(3)], names=list(shape.classes))
    if shape.task == "regression":
        cols["label"] = pa.array(label, mask=~labeled)
    else:
        names = np.array(shape.classes, dtype=object)[np.nan_to_num(label).astype(int)]
        cols["label"] = pa.array(list(names), pa.string(), mask=~labeled)
    return pa.table(cols)


def close(x: float | None) -> float | None:
    """Float sums to 12 significant digits: regression's residual sums are added in another
    order when split (counts are compared exactly)."""
    return None if x is None else float(f"{x:.12g}")


def contents(rows: list) -> dict:
    """Summary rows unpacked to comparable values (the label-delay sketch by its count)."""
    out = {}
    for r in rows:
        key = (r.version_id, r.bucket_start, r.kind, r.profile_key)
        if r.kind == DRIFT:
            d = unpack_drift(r.payload, r.profile_key)
            cbpe = None if d.cbpe is None else tuple(
                [close(v) for v in x.reshape(-1)] for x in (d.cbpe.matrix, d.cbpe.variance,
                                                            d.cbpe.rows, d.cbpe.expected))
            out[key] = (r.n, d.counts.tolist(), cbpe)
            continue
        o = unpack_outcome(r.payload)
        c = o.calibration
        out[key] = (r.n, o.n, o.labeled, close(o.errors), close(o.squares),
                    None if c is None else (c.count.tolist(), c.confidence.round(9).tolist(),
                                            c.outcome.tolist(), round(c.brier, 9),
                                            c.label_counts.tolist()),
                    None if o.confusion is None else o.confusion.tolist(),
                    {k: (s.cohorts, s.n.tolist(), [close(v) for v in s.first],
                         [close(v) for v in s.second]) for k, s in o.cohorts.items()},
                    None if o.delays is None else o.delays.n)
    return out


def shifted(task: str, seed: int, sample_size: int, n: int) -> tuple:
    """(the generator, the model's shape, its reference profile, n rows shifted from it)."""
    rng = np.random.default_rng(seed)
    m = model(task)
    cp = reference(rng, m, sample_size=sample_size)
    return rng, ModelShape.of(m), cp, data(rng, n, task, shift=0.3)


@pytest.mark.parametrize("task", list(CLASSES))
def test_an_arrow_batch_folds_into_the_summaries_of_the_same_records(task: str):
    n = 4000
    rng, shape, cp, d = shifted(task, 11, 500, n)
    offsets = np.sort(rng.uniform(0, 3 * 3600, n))  # many buckets
    label = np.where(rng.random(n) < 0.6, d["label"], np.nan)
    delays = rng.uniform(0, 900, n)
    from_records = summary_rows(shape, rows_(shape, d, offsets, label, delays), BUCKET,
                                count_predictions=True, profiles={7: cp})
    from_arrow = fold(shape, arrow_table(shape, d, offsets, label, delays), 7, {7: cp},
                      BUCKET)
    assert len(from_records) == len(from_arrow) == 2 * 36
    assert contents(from_arrow) == contents(from_records)


@pytest.mark.parametrize("task", list(CLASSES))
def test_folding_in_parts_and_merging_in_any_order_equals_one_fold(task: str):
    rng = np.random.default_rng(5)
    m = model(task)
    shape = ModelShape.of(m)
    cp = reference(rng, m, sample_size=300)
    n = 3000
    d = data(rng, n, task)
    offsets = rng.uniform(0, 3600, n)  # unsorted: every part spans many buckets
    label = np.where(rng.random(n) < 0.5, d["label"], np.nan)
    table = arrow_table(shape, d, offsets, label, np.zeros(n))
    whole = merge(fold(shape, table, 7, {7: cp}, BUCKET))
    parts = []
    for at in np.array_split(rng.permutation(n), 5):
        parts.extend(fold(shape, table.take(pa.array(np.sort(at))), 7, {7: cp}, BUCKET))
    rng.shuffle(parts)
    merged = merge(parts)
    assert contents(merged) == contents(whole)
    assert sum(r.n for r in merged if r.kind == DRIFT) == n


def test_arrow_categories_are_keyed_by_their_string_form_as_everywhere_else():
    values = [3, None, 1, 3, 20, 1]
    c = coded(pa.array(values, pa.int64()), 6)
    def counted(codes: tuple) -> dict:
        return dict(zip(codes[0], codes[1].tolist(), strict=True))

    assert counted(categorical_codes(c)) == counted(
        categorical_codes(np.array(values, dtype=object))) == {"1": 2, "20": 1, "3": 2}
    assert c.keys == ("1", "20", "3") and c.row_code.tolist() == [2, -1, 0, 2, 1, 0]
    f = coded(pa.array([1.5, float("nan"), None, 1.5]), 4)
    assert f.keys == ("1.5",) and f.row_code.tolist() == [0, -1, -1, 0]


def test_a_batch_without_usable_timestamps_is_refused_naming_the_column():
    shape = ModelShape.of(model("regression"))
    with pytest.raises(Invalid, match="timestamp"):
        rows_from_arrow(shape, pa.table({"x": [1.0]}), 1)
    with pytest.raises(Invalid, match="timestamp"):
        rows_from_arrow(shape, pa.table({"timestamp": pa.array([None, 1.0])}), 1)
    with pytest.raises(Invalid, match="'x' must be numeric"):
        rows_from_arrow(shape, pa.table({"timestamp": [1.0], "x": [[1]]}), 1)


def test_a_label_without_its_own_time_came_with_its_prediction():
    """A null label_timestamp means what an absent column means: delay 0, counted in the
    label-delay sketch like the service's inline labels."""
    shape = ModelShape("binary_classification", (("x", "numeric"),), (), ("a", "b"))
    ts = pa.array([T0] * 3, pa.timestamp("us", "UTC"))
    base = {"timestamp": ts, "x": [1.0, 2.0, 3.0], "score": [0.1, 0.2, 0.3],
            "label": ["a", "b", None]}
    absent = fold(shape, pa.table(base), 1, {}, BUCKET)
    null = fold(shape, pa.table({**base, "label_timestamp": pa.array(
        [None, T0, None], pa.timestamp("us", "UTC"))}), 1, {}, BUCKET)
    delays = [unpack_outcome(rows[0].payload).delays for rows in (absent, null)]
    assert [(d.n, d.get_min_value(), d.get_max_value()) for d in delays] == [(2, 0.0, 0.0)] * 2
    assert contents(null) == contents(absent)


@pytest.mark.parametrize("task, column, bad", [
    ("binary_classification", "score", [0.5, None]), ("binary_classification", "score", [1.5, 0.1]),
    ("regression", "value", [float("nan"), 1.0])])
def test_a_batch_with_unusable_predictions_is_refused_naming_the_column(task, column, bad):
    shape = ModelShape.of(model(task))
    table = pa.table({"timestamp": [1.0, 2.0], column: pa.array(bad, pa.float64())})
    with pytest.raises(Invalid, match=f"'{column}' has 1 missing or unusable"):
        rows_from_arrow(shape, table, 1)


@pytest.mark.parametrize("task", list(CLASSES))
def test_counting_columns_without_sorting_them_changes_no_byte(task: str, monkeypatch):
    """Large groups' numeric columns are counted one by one without sorting them and small
    groups' all together (app/monitoring/slots.py): each way forced on for every group, and
    the values sorted for every group, the fold's rows are the same bytes (NaN and
    infinities, ties with the KS points, unseen categories, two versions, many buckets in no
    order)."""
    from app.evaluation import counting

    n = 20000
    rng, shape, cp, d = shifted(task, 23, 700, n)
    special = rng.random(n)
    d["x"] = np.where(special < 0.1, rng.choice(cp.columns[0].ks.points, n), d["x"])
    d["x"][special > 0.98] = rng.choice([np.inf, -np.inf, -0.0, 1e15, -1e15],
                                        int((special > 0.98).sum()))
    offsets = rng.uniform(0, 3 * 3600, n)
    label = np.where(rng.random(n) < 0.5, d["label"], np.nan)
    table = arrow_table(shape, d, offsets, label, rng.uniform(0, 900, n))
    versions = np.where(rng.random(n) < 0.3, 8, 7)
    folded = {}
    for name, unsorted, together in (("sorted", False, False), ("unsorted", True, False),
                                     ("together", False, True)):
        monkeypatch.setattr(counting, "counts_unsorted",
                            lambda n, ks, on=unsorted: on and ks is not None)
        monkeypatch.setattr(counting, "counts_together", lambda n, on=together: on)
        folded[name] = fold(shape, table, versions, {7: cp, 8: cp}, BUCKET)
    assert len(folded["sorted"]) == 4 * 36
    drift = {name: [tuple(r) for r in rows if r.kind == DRIFT] for name, rows in folded.items()}
    assert drift["unsorted"] == drift["sorted"] == drift["together"]  # the packed bytes
    assert contents(folded["unsorted"]) == contents(folded["sorted"]) == contents(
        folded["together"])  # and the outcomes
