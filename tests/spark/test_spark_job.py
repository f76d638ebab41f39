"""The Spark adapter folds a lake's predictions into exactly the summaries the kernel gives on
one Arrow table of the same predictions: a lake of Parquet files with its own column names,
predictions logged twice, labels inline and late (some twice, some for an inline-labeled
prediction, some for predictions the lake does not have), missing values, unseen categories,
cohorts; binary, multiclass and regression. Uploaded, they report what the same predictions
POSTed raw report, and a re-run job (its partitions cut otherwise, its data changed) counts
nothing twice."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from app.cli.client import HttpError
from app.evaluation.fold import fold, from_profile_document, merge
from app.spark.job import fold_dataframe, sequence_of, summarize
from app.storage.summaries import DRIFT, OUTCOME
from tests.api.test_summaries_api import comparable, post_raw, reports, setup_model, traffic
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


def lake(rng: np.random.Generator, task: str, n: int, *, twice: bool = True,
         as_array: bool = True) -> tuple[dict, pa.Table, pa.Table, pa.Table]:
    """(profile document, the predictions as the kernel reads them with each one's first
    label, the lake's predictions, the lake's labels); ``twice``: some predictions logged
    twice; ``as_array``: multiclass probabilities logged as arrays, not structs."""
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
    if task == "multiclass_classification" and as_array:  # an array in the classes' order
        preds = preds.drop_columns(["probabilities"]).append_column(
            "probabilities", pa.array(d["probs"].tolist(), pa.list_(pa.float64())))
    preds = preds.rename_columns([COLUMNS.get(c, c) for c in preds.column_names])
    again = rng.choice(n, n // 20 if twice else 0, replace=False)  # logged twice: counted once
    preds = pa.concat_tables([preds, preds.take(again)]).take(
        rng.permutation(n + again.size))
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


def records_frames(spark, recs: list[dict]):
    """The records of tests/api/test_summaries_api.py as a lake holds them: predictions with
    their inline labels, and the later labels in a table of their own."""
    inline = [r if r.get("label_timestamp") == r["timestamp"] else {} for r in recs]
    predictions = pa.table({
        "prediction_id": [r["prediction_id"] for r in recs],
        "ts": pa.array([r["timestamp"] for r in recs], pa.timestamp("us", "UTC")),
        "amount": [r["features"]["amount"] for r in recs],
        "country": [r["features"]["country"] for r in recs],
        "region": [r["cohorts"]["region"] for r in recs],
        "score": [r["prediction"]["score"] for r in recs],
        "label": [r.get("label") for r in inline]})
    later = [r for r in recs if "label" in r and r["label_timestamp"] != r["timestamp"]]
    labels = pa.table({"prediction_id": [r["prediction_id"] for r in later],
                       "label": [r["label"] for r in later],
                       "timestamp": pa.array([r["label_timestamp"] for r in later],
                                             pa.timestamp("us", "UTC"))})
    return spark.createDataFrame(predictions), spark.createDataFrame(labels)


def test_a_spark_job_reports_what_raw_ingest_reports_and_a_rerun_adds_nothing(
        spark, client, live_server):
    recs = traffic(1200)
    setup_model(client, "raw")
    setup_model(client, "lake")
    post_raw(client, "raw", recs)
    predictions, labels = records_frames(spark, recs)
    job = {"url": live_server.url, "model": "lake", "version": "v1",
           "source": "spark:lake-daily", "columns": {"timestamp": "ts"}}
    first = summarize(predictions, labels, **job)
    assert (first.accepted, first.duplicates, first.predictions) == (24, 0, 1200)
    raw = reports(client, "raw")
    assert comparable(reports(client, "lake")) == comparable(raw)
    # the job run again (a retry), its partitions cut otherwise, and once more after its
    # data changed (the late labels gone): each bucket's summaries were stored once
    for predictions_again, labels_again in ((predictions.repartition(4), labels),
                                            (predictions, None)):
        again = summarize(predictions_again, labels_again, **job)
        assert (again.accepted, again.duplicates, again.predictions) == (0, 24, 0)
        assert again.sequences == first.sequences
    assert comparable(reports(client, "lake")) == comparable(raw)
    with pytest.raises(HttpError) as refused:
        summarize(predictions, labels, **{**job, "version": "v9"})
    assert refused.value.status == 404


def test_every_run_of_a_job_sends_one_sequence_per_kind_drift_s_per_profile():
    doc = {"model": "fraud", "version": "v3", "bucket_seconds": 300.0, "profile_key": "p1"}
    first = {kind: sequence_of(doc, kind) for kind in (OUTCOME, DRIFT)}
    assert first[OUTCOME] != first[DRIFT]
    assert all(0 <= s < 2**63 for s in first.values())
    newer = {**doc, "profile_key": "p2"}
    assert sequence_of(newer, OUTCOME) == first[OUTCOME]
    assert sequence_of(newer, DRIFT) != first[DRIFT]
    assert {sequence_of(doc, kind, run=7) for kind in first}.isdisjoint(first.values())
    for other in ({"model": "loans"}, {"version": "v4"}, {"bucket_seconds": 60.0}):
        assert {sequence_of({**doc, **other}, k) for k in first}.isdisjoint(first.values())


def test_a_prediction_without_time_fails_the_job_naming_the_column(spark):
    from pyspark.errors import PythonException

    rng = np.random.default_rng(31)
    doc, expected, _, _ = lake(rng, "regression", 200)
    ts = expected["timestamp"].to_pylist()
    ts[17] = None
    predictions = spark.createDataFrame(expected.set_column(
        expected.schema.get_field_index("timestamp"), "timestamp",
        pa.array(ts, pa.timestamp("us", "UTC"))))
    with pytest.raises(PythonException, match="column 'timestamp' has null"):
        fold_dataframe(doc, predictions, dedupe=False)
