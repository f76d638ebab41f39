"""The Spark adapter's file mode folds a Parquet lake into exactly the summaries the kernel
gives on one Arrow table of the same predictions, and the DataFrame mode on the same lake:
labels inline and late (some twice, some for an inline-labeled prediction, some for
predictions the lake does not have), missing values, unseen categories, cohorts; binary,
multiclass and regression; hive partitions filtered; its columns checked before any task
runs. (Through a live service, beside raw ingest and the other paths: test_four_paths.py.)"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from app.errors import Invalid
from app.evaluation.fold import fold, from_profile_document, merge
from app.spark.files import fold_parquet
from app.spark.job import fold_dataframe
from app.storage.summaries import OUTCOME
from tests.evaluation.test_evaluation_fold import contents
from tests.evaluation.test_evaluation_summaries import BUCKET, CLASSES
from tests.spark.test_spark_job import COLUMNS, LABEL_COLUMNS, lake

pytestmark = pytest.mark.filterwarnings("ignore:PySpark does not yet fully support pandas")


def write(folder, table: pa.Table, files: int, partition: str | None = None) -> str:
    """``table`` as ``files`` Parquet files in ``folder`` (each in a hive partition
    ``partition=i`` when given)."""
    for i, at in enumerate(np.array_split(np.arange(table.num_rows), files)):
        where = folder / f"{partition}={i}" if partition else folder
        where.mkdir(parents=True, exist_ok=True)
        pq.write_table(table.take(pa.array(at)), where / f"part-{i}.parquet")
    return str(folder)


@pytest.mark.parametrize("task", list(CLASSES))
def test_the_file_mode_folds_the_lake_into_the_summaries_of_one_arrow_table(spark, tmp_path,
                                                                           task):
    rng = np.random.default_rng(29)
    doc, expected, preds, labels = lake(rng, task, 3000, twice=False, as_array=False)
    shape, cp = from_profile_document(doc)
    path = write(tmp_path / "predictions", preds, 4, partition="day")
    late = write(tmp_path / "labels", labels, 2)
    folded = fold_parquet(doc, spark, path, late, columns=COLUMNS, label_columns=LABEL_COLUMNS)
    one_table = merge(fold(shape, expected, 0, {0: cp}, BUCKET))
    assert contents(folded) == contents(one_table)
    assert sum(r.n for r in folded if r.kind == OUTCOME) == 3000
    as_frame = fold_dataframe(doc, spark.read.parquet(path), spark.read.parquet(late),
                              columns=COLUMNS, label_columns=LABEL_COLUMNS)
    assert contents(as_frame) == contents(folded)

    # a filter on the partition column: the other files are not read
    kept = fold_parquet(doc, spark, path, late, columns=COLUMNS, label_columns=LABEL_COLUMNS,
                        filter=pc.field("day") == 2)
    third = merge(fold(shape, file_rows(expected, preds, 2), 0, {0: cp}, BUCKET))
    assert contents(kept) == contents(third)
    assert 0 < sum(r.n for r in kept if r.kind == OUTCOME) < 3000


def file_rows(expected: pa.Table, preds: pa.Table, k: int) -> pa.Table:
    """The rows of ``expected`` (row i: prediction p-i) that the ``k``-th of 4 files
    holds."""
    written = np.array_split(np.arange(preds.num_rows), 4)[k]
    ids = [int(p.removeprefix("p-")) for p in preds.column("pid").take(pa.array(written))
           .to_pylist()]
    return expected.take(pa.array(sorted(ids)))


def test_the_file_mode_names_every_column_problem_before_any_task_runs(spark, tmp_path):
    rng = np.random.default_rng(3)
    doc, _, preds, labels = lake(rng, "multiclass_classification", 300, twice=False)
    path = write(tmp_path / "predictions", preds, 1)
    late = write(tmp_path / "labels", labels, 1)
    with pytest.raises(Invalid) as err:
        fold_parquet(doc, spark, path, late, columns={**COLUMNS, "amuont": "x"},
                     label_columns={**LABEL_COLUMNS, "label": "nope"})
    assert [p.field for p in err.value.details] == ["amuont"]
    with pytest.raises(Invalid) as err:
        fold_parquet(doc, spark, path, late, columns=COLUMNS,
                     label_columns={**LABEL_COLUMNS, "label": "nope"})
    assert [(p.field, p.problem) for p in err.value.details] == [
        ("label", "the labels have no column 'nope'")]
    # an array of probabilities: the DataFrame mode reads it, the file mode says so
    with pytest.raises(Invalid, match="must be a struct with one field per class in the "
                       "file mode, not list<element: double>") as err:
        fold_parquet(doc, spark, path, late, columns=COLUMNS, label_columns=LABEL_COLUMNS)
    assert [p.field for p in err.value.details] == ["probabilities"]
