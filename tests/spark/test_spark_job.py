"""The Spark adapter folds a lake's predictions into exactly the summaries the kernel gives on
one Arrow table of the same predictions: a lake of Parquet files with its own column names,
predictions logged twice, labels inline and late (some twice, some for an inline-labeled
prediction, some for predictions the lake does not have), missing values, unseen categories,
cohorts; binary, multiclass and regression; in any partitioning, with the same upload
sequence."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from app.evaluation.fold import fold, from_profile_document, merge
from app.spark.job import derived_sequence, fold_dataframe
from app.storage.summaries import DRIFT, OUTCOME
from tests.evaluation.test_evaluation_fold import arrow_table, contents
from tests.evaluation.test_evaluation_summaries import BUCKET, CLASSES, data, model
from tests.spark.conftest import profile_document

pytestmark = pytest.mark.filterwarnings("ignore:PySpark does not yet fully support pandas")

# the lake's names for the kernel's columns
COLUMNS = {"prediction_id": "pid", "timestamp": "event_time", "x": "f_x",
           "label": "inline_label"}
LABEL_COLUMNS = {"prediction_id": "pid", "label": "gt", "timestamp": "labeled_at"}


def other_label(task: str, label: pa.Array) -> pa.Array:
    """A label that differs from each of ``label``'s: what must lose to the first one."""
    if task == "regression":
        return pa.array(np.asarray(label.to_numpy(zero_copy_only=False)) + 5.0)
    classes = CLASSES[task]
    return pa.array([classes[(classes.index(v) + 1) % len(classes)] for v in label.to_pylist()])


def lake(rng: np.random.Generator, task: str, n: int) -> tuple[dict, pa.Table, pa.Table,
                                                               pa.Table]:
    """(profile document, the predictions as the kernel reads them with each one's first
    label, the lake's predictions, the lake's labels)."""
    m = model(task)
    ref = data(rng, 3000, task)
    ref["cat"] = np.array(rng.choice(["a", "b", "c"], size=3000), dtype=object)
    doc = profile_document(m, ref, 3000, key=f"key-{task}")
    shape, _ = from_profile_document(doc)
    d = data(rng, n, task, shift=0.3)
    offsets = rng.uniform(0, 3 * 3600, n)  # unsorted, many buckets
    inline = rng.random(n) < 0.25
    late = ~inline & (rng.random(n) < 0.5)
    delays = np.where(inline, 0.0, rng.uniform(1, 1800, n))
    expected = arrow_table(shape, d, offsets, np.where(inline | late, d["label"], np.nan),
                           delays)
    ids = pa.array([f"p-{i}" for i in range(n)])
    preds = expected.drop_columns(["label_timestamp"]).append_column("pid", ids)
    preds = preds.set_column(preds.schema.get_field_index("label"), "label", pa.array(
        expected["label"].to_pylist(), mask=~inline, type=expected["label"].type))
    if task == "multiclass_classification":  # logged as an array in the classes' order
        preds = preds.drop_columns(["probabilities"]).append_column(
            "probabilities", pa.array(d["probs"].tolist(), pa.list_(pa.float64())))
    preds = preds.rename_columns([COLUMNS.get(c, c) for c in preds.column_names])
    twice = rng.choice(n, n // 20, replace=False)  # logged twice: counted once
    preds = pa.concat_tables([preds, preds.take(twice)]).take(rng.permutation(n + n // 20))
    late_at = np.flatnonzero(late)
    label, ts, label_ts = (expected[c].combine_chunks()
                           for c in ("label", "timestamp", "label_timestamp"))
    labels = pa.table({"pid": ids.take(late_at), "gt": label.take(late_at),
                       "labeled_at": label_ts.take(late_at)})
    again = late_at[: late_at.size // 4]  # a second, later label: the first one counts
    after = pa.array(label_ts.take(again).to_numpy() + np.timedelta64(600, "s"),
                     pa.timestamp("us", "UTC"))
    overruled = np.flatnonzero(inline)[:50]  # a late label for an inline-labeled prediction
    labels = pa.concat_tables([labels, pa.table({
        "pid": pa.concat_arrays([ids.take(again), ids.take(overruled),
                                 pa.array([f"ghost-{i}" for i in range(30)])]),
        "gt": pa.concat_arrays([other_label(task, label.take(again)),
                                other_label(task, label.take(overruled)),
                                label.take(late_at[:30])]),
        "labeled_at": pa.concat_arrays([after, ts.take(overruled), ts.take(late_at[:30])])})])
    return doc, expected, preds, labels.take(rng.permutation(labels.num_rows))


def parquet(spark, tmp_path, name: str, table: pa.Table, files: int):
    """``table`` as a directory of Parquet files, read by Spark: the lake."""
    folder = tmp_path / name
    folder.mkdir()
    for i, at in enumerate(np.array_split(np.arange(table.num_rows), files)):
        pq.write_table(table.take(pa.array(at)), folder / f"part-{i}.parquet")
    return spark.read.parquet(str(folder))


@pytest.mark.parametrize("task", list(CLASSES))
def test_spark_folds_the_lake_into_the_summaries_of_one_arrow_table(spark, tmp_path, task):
    rng = np.random.default_rng(23)
    doc, expected, preds, labels = lake(rng, task, 3000)
    shape, cp = from_profile_document(doc)
    predictions = parquet(spark, tmp_path, "predictions", preds, 3)
    late = parquet(spark, tmp_path, "labels", labels, 2)
    folded = fold_dataframe(doc, predictions, late, columns=COLUMNS,
                            label_columns=LABEL_COLUMNS, fold_rows=700)
    one_table = merge(fold(shape, expected, 0, {0: cp}, BUCKET))
    assert len(one_table) == 2 * 36 and {r.kind for r in one_table} == {OUTCOME, DRIFT}
    assert contents(folded) == contents(one_table)
    assert sum(r.n for r in folded if r.kind == OUTCOME) == 3000


def test_the_partitioning_changes_neither_the_summaries_nor_the_upload_sequence(spark,
                                                                                tmp_path):
    rng = np.random.default_rng(29)
    doc, expected, preds, labels = lake(rng, "binary_classification", 2000)
    predictions = parquet(spark, tmp_path, "predictions", preds, 2)
    late = parquet(spark, tmp_path, "labels", labels, 1)
    runs = [fold_dataframe(doc, p, late, columns=COLUMNS, label_columns=LABEL_COLUMNS)
            for p in (predictions, predictions.repartition(5))]
    assert contents(runs[0]) == contents(runs[1])
    for kind in (OUTCOME, DRIFT):
        first, second = ([r for r in rows if r.kind == kind] for rows in runs)
        assert derived_sequence(doc, kind, first) == derived_sequence(doc, kind, second)
    # another label for one prediction is another upload: a new sequence for the outcome,
    # the same for drift (it counts no label)
    shape, cp = from_profile_document(doc)
    flipped = expected["label"].to_pylist()
    i = next(i for i, v in enumerate(flipped) if v is not None)
    flipped[i] = "good" if flipped[i] == "bad" else "bad"
    changed = merge(fold(shape, expected.set_column(
        expected.schema.get_field_index("label"), "label", pa.array(flipped)), 0, {0: cp},
        BUCKET))
    for kind, same in ((OUTCOME, False), (DRIFT, True)):
        mine = [r for r in changed if r.kind == kind]
        ours = [r for r in runs[0] if r.kind == kind]
        assert (derived_sequence(doc, kind, mine) == derived_sequence(doc, kind, ours)) is same
