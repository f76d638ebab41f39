"""The lake's DataFrames as the kernel's columns: every wrong name, missing column and wrong
type is refused before any task runs, each named; a multiclass prediction logged as a struct,
a map or an array is one struct of the classes."""

from __future__ import annotations

from datetime import UTC, datetime

import pyarrow as pa
import pytest

from app.errors import Invalid
from app.evaluation.summaries import ModelShape
from app.spark.columns import kernel_frame

pytestmark = pytest.mark.filterwarnings("ignore:PySpark does not yet fully support pandas")

BINARY = ModelShape("binary_classification", (("amount", "numeric"), ("country", "categorical")),
                    ("region",), ("legit", "fraud"))
MULTICLASS = ModelShape("multiclass_classification", (("petal", "numeric"),), (),
                        ("setosa", "versicolor", "virginica"))
T = datetime(2026, 12, 6, 10, 0, tzinfo=UTC)


def frame(spark, **columns):
    return spark.createDataFrame(pa.table(columns))


def problems(err: pytest.ExceptionInfo) -> list[tuple[str | None, str]]:
    return [(p.field, p.problem) for p in err.value.details]


def test_wrong_names_missing_columns_and_wrong_types_are_each_named(spark):
    lake = frame(spark, pid=["a"], event_time=pa.array([T], pa.timestamp("us", "UTC")),
                 amount=["12.5"], country=["DE"], score=[0.2])
    with pytest.raises(Invalid) as err:
        kernel_frame(lake, None, BINARY, columns={"prediction_id": "pid", "timestamp":
                                                  "event_time", "amuont": "amount"})
    assert problems(err) == [
        ("amuont", "'amuont' is not one of the model's columns (timestamp, amount, country, "
                   "region, score, prediction_id, label, label_timestamp)"),
        ("region", "the predictions have no column 'region' (map it: columns={'region': "
                   "'<column>'})")]
    assert "amuont" in str(err.value) and "region" in str(err.value)
    with pytest.raises(Invalid) as err:
        kernel_frame(lake.withColumnRenamed("event_time", "timestamp"), None, BINARY,
                     columns={"prediction_id": "pid", "region": "country"})
    assert problems(err) == [("amount", "column 'amount' must be numeric, not string")]
    with pytest.raises(Invalid) as err:  # without dedupe no id is needed; a label is optional
        kernel_frame(lake, None, BINARY, columns={"timestamp": "score", "region": "gone",
                                                  "amount": "score"}, dedupe=False)
    assert problems(err) == [("region", "the predictions have no column 'gone'")]


def test_labels_are_checked_too(spark):
    lake = frame(spark, prediction_id=["a"], timestamp=pa.array([T], pa.timestamp("us", "UTC")),
                 amount=[1.0], country=["DE"], region=["eu"], score=[0.2])
    labels = frame(spark, id=["a"], label=["fraud"], at=["yesterday"])
    with pytest.raises(Invalid) as err:
        kernel_frame(lake, labels, BINARY, label_columns={"prediction_id": "id"})
    assert problems(err) == [("timestamp", "the labels have no column 'timestamp' (map it: "
                                           "columns={'timestamp': '<column>'})")]
    with pytest.raises(Invalid) as err:
        kernel_frame(lake, labels, BINARY,
                     label_columns={"prediction_id": "id", "timestamp": "at"})
    assert problems(err) == [("timestamp", "column 'at' must be a timestamp or epoch "
                                           "seconds, not string")]


def test_a_multiclass_prediction_as_struct_map_or_array_is_one_struct_of_the_classes(spark):
    probs = [(0.7, 0.2, 0.1), (0.1, 0.1, 0.8)]
    ts = pa.array([T, T], pa.timestamp("us", "UTC"))
    struct = pa.array([{"virginica": c, "setosa": a, "versicolor": b} for a, b, c in probs])
    as_map = pa.array([[("setosa", a), ("versicolor", b)] for a, b, _ in probs],
                      pa.map_(pa.string(), pa.float64()))  # a class absent: null
    as_array = pa.array([list(p) for p in probs], pa.list_(pa.float32()))
    short = pa.array([list(p[:2]) for p in probs], pa.list_(pa.float64()))
    seen = []
    for logged in (struct, as_map, short, as_array):
        lake = frame(spark, prediction_id=["a", "b"], timestamp=ts, petal=[1.0, 2.0],
                     probs=logged)
        out = kernel_frame(lake, None, MULTICLASS, columns={"probabilities": "probs"})
        assert out.schema["probabilities"].dataType.simpleString() == (
            "struct<setosa:double,versicolor:double,virginica:double>")
        seen.append(sorted((r["petal"], tuple(r["probabilities"])) for r in out.collect()))
    assert seen[0] == [(1.0, (0.7, 0.2, 0.1)), (2.0, (0.1, 0.1, 0.8))]
    assert seen[1] == seen[2] == [(1.0, (0.7, 0.2, None)), (2.0, (0.1, 0.1, None))]
    assert [[(x, tuple(round(p, 6) for p in ps)) for x, ps in s] for s in seen[3:]] == [seen[0]]
    with pytest.raises(Invalid) as err:
        kernel_frame(frame(spark, prediction_id=["a"], timestamp=ts[:1], petal=[1.0],
                           probabilities=["setosa"]), None, MULTICLASS)
    assert problems(err)[0][0] == "probabilities"
