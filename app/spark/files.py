"""The Spark adapter's file mode, for a plain Parquet lake: Spark hands out the dataset's
files, one task each, and the Python workers read them with pyarrow and fold them, exactly as
`modelmon backfill` does (app/cli/lake.py: the same read, the same late-label join, the same
kernel). No row passes through the JVM: Spark does not decode the Parquet into rows and then
into Arrow for ``mapInArrow``, which is most of what the DataFrame mode costs
(docs/scale.md, "Spark: two modes")::

    from app.spark import summarize_parquet

    summarize_parquet(spark, "s3://logs/fraud/", "s3://labels/fraud/",
                      filter=pc.field("date") == "2026-12-05", url=..., token=..., model="fraud",
                      version="v3", source="spark:fraud-daily",
                      columns={"timestamp": "event_time"})

The columns are mapped and checked as in the DataFrame mode (app/spark/columns.py), before
any task runs. What differs: every row is counted (no prediction id is counted once: use the
DataFrame mode with ``dedupe=True`` where ids may repeat), a multiclass prediction must be a
struct with one field per class, and the executors must be able to open the dataset with
pyarrow (a local path, a URL pyarrow opens itself, or any fsspec URL whose package is
installed there) and, with labels, have DuckDB (``modelmon[lake]``).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.dataset as ds
from pyspark import Broadcast
from pyspark.sql import SparkSession
from pyspark.sql import types as T

from app.cli import lake
from app.cli.client import ApiClient
from app.errors import Problem
from app.evaluation.fold import from_profile_document, merge
from app.spark.columns import PREDICTION_ID, label_names, prediction_names, refuse
from app.spark.job import SCHEMA, Summarized, merged, profile_of, shared, to_arrow, upload
from app.storage.summaries import SummaryRow


def _spark_type(t: pa.DataType) -> T.DataType:
    from pyspark.sql.pandas.types import from_arrow_type

    try:
        return from_arrow_type(t, prefer_timestamp_ntz=False)
    except (TypeError, ValueError, AttributeError):  # a type Spark has no name for
        return T.BinaryType()


def _types(schema: pa.Schema) -> dict[str, T.DataType]:
    return {f.name: _spark_type(f.type) for f in schema}


def _projection(schema: pa.Schema, names: dict[str, str]) -> dict[str, ds.Expression]:
    """The kernel's columns (app/evaluation/fold.py) read from the dataset's; the prediction
    id under the name the late-label join reads."""
    prob = names.get("probabilities")
    if prob is not None and not pa.types.is_struct(schema.field(prob).type):
        raise refuse([Problem(f"column {prob!r} must be a struct with one field per class "
                              f"in the file mode, not {schema.field(prob).type} (read it as "
                              "a DataFrame and use summarize)", field="probabilities")],
                     "predictions")
    return {(lake.ID if key == PREDICTION_ID else key): ds.field(column)
            for key, column in names.items()}


@dataclass(frozen=True)
class FilesJob:
    """What every task needs: the profile document, how to read a file, and the files (each
    task folds the ones whose index it is given)."""

    doc: dict[str, Any]
    schema: pa.Schema
    columns: dict[str, ds.Expression]
    filter: ds.Expression | None
    labels: lake.Labels | None
    files: tuple[tuple[str, ds.Fragment], ...]


@dataclass(frozen=True)
class FoldFiles:
    """The function ``mapInArrow`` runs over a range of file indexes: each file read,
    joined with its late labels and folded by ``lake.fold_unit`` (the backfill's unit of
    work), and merged into one summary per bucket and kind."""

    shared: Any  # a Broadcast of the FilesJob, or the FilesJob itself

    def __call__(self, batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        job = self.shared.value if isinstance(self.shared, Broadcast) else self.shared
        version = job.doc["version"]
        rows: list[SummaryRow] = []
        for batch in batches:
            for i in batch.column(0).to_pylist():
                name, fragment = job.files[i]
                unit = lake.Unit(name, fragment, job.schema, job.columns, job.filter,
                                 job.doc["task"], {version: job.doc}, version, job.labels)
                rows = merge(rows + lake.fold_unit(unit).summaries.get(version, []))
        if rows:
            yield to_arrow(version, rows)


def files_job(doc: dict[str, Any], path: str, labels: str | None = None, *,
              columns: Mapping[str, str] | None = None,
              label_columns: Mapping[str, str] | None = None,
              filter: ds.Expression | None = None,
              label_lag_seconds: float | None = None) -> FilesJob:
    """The dataset at ``path`` (and the labels at ``labels``) opened, its columns mapped and
    checked on the driver, and its files listed (those ``filter`` may keep: a filter on hive
    partition columns skips whole files)."""
    shape, _ = from_profile_document(doc)
    dataset, root = lake.open_dataset(path, "predictions")
    names = prediction_names(_types(dataset.schema), shape, columns, with_id=labels is not None)
    if labels is None:
        names.pop(PREDICTION_ID, None)
        late = None
    else:
        found = label_names(_types(lake.open_dataset(labels, "labels")[0].schema), shape,
                            label_columns)
        late = lake.Labels(labels, found[PREDICTION_ID], found["label"], found["timestamp"],
                           label_lag_seconds)
    fragments = sorted(dataset.get_fragments(filter=filter) if filter is not None
                       else dataset.get_fragments(), key=lambda f: f.path)
    return FilesJob(doc, dataset.schema, _projection(dataset.schema, names), filter, late,
                    tuple((lake.unit_name(f, root), f) for f in fragments))


def fold_parquet(doc: dict[str, Any], spark: SparkSession, path: str, labels: str | None = None,
                 **options: Any) -> list[SummaryRow]:
    """The Parquet dataset at ``path`` (with its late labels) folded on ``doc`` in Spark, one
    task per file, merged: one summary row per bucket and kind (options: ``files_job``'s)."""
    job = files_job(doc, path, labels, **options)
    if not job.files:
        return []
    value = shared(spark, job)
    n = len(job.files)
    return merged(spark.range(0, n, 1, n).mapInArrow(FoldFiles(value), SCHEMA), value)


def summarize_parquet(spark: SparkSession, path: str, labels: str | None = None, *,
                      model: str, version: str, source: str, url: str | None = None,
                      token: str | None = None, columns: Mapping[str, str] | None = None,
                      label_columns: Mapping[str, str] | None = None,
                      filter: ds.Expression | None = None,
                      label_lag_seconds: float | None = None, run: int | None = None,
                      retries: int = 5) -> Summarized:
    """Fold one version's predictions in the Parquet dataset at ``path`` (and their late
    labels in the one at ``labels``) in Spark's file mode and upload the summaries, as
    ``summarize`` does (the same sequences: a job moved from one mode to the other is
    recognised); see the module docstring and docs/scale.md."""
    client = ApiClient(url, token, retries=retries)
    doc = profile_of(client, model, version)
    rows = fold_parquet(doc, spark, path, labels, columns=columns, label_columns=label_columns,
                        filter=filter, label_lag_seconds=label_lag_seconds)
    return upload(client, doc, rows, source=source, run=run)
