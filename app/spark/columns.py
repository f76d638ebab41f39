"""The kernel's columns from a lake's DataFrames, in Spark: the column mapping, the checks of
names and types (before any task runs), a prediction id counted once, and late labels joined
by prediction id.

The kernel's columns are those of app/evaluation/fold.py: ``timestamp``, one per feature and
cohort key, the prediction (``score``, ``value`` or ``probabilities``), and optionally
``label`` and ``label_timestamp``. A mapping names the DataFrame's column for each kernel
column whose name differs (``{"timestamp": "event_time", "amount": "f_amount"}``); the
predictions' id is ``prediction_id``. Labels come as a second DataFrame of ``prediction_id``,
``label`` and ``timestamp`` (the label's time), mapped the same way.

What the service does with raw records, done here in Spark: a prediction id seen twice counts
once (the smallest row of the id's rows, so every run keeps the same one); a prediction's
first label wins (its inline label, else the earliest of its late labels); a label whose
prediction is not in the DataFrame is not counted.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F
from pyspark.sql import types as T

from app.errors import Invalid, Problem
from app.evaluation.fold import LABEL, LABEL_TIMESTAMP, TIMESTAMP, prediction_column
from app.evaluation.summaries import ModelShape

PREDICTION_ID = "prediction_id"
LABEL_COLUMNS = (PREDICTION_ID, LABEL, TIMESTAMP)
# the labels' columns once joined: the late label and its time
_LATE, _LATE_TS = "__late_label", "__late_timestamp"
TIME_TYPES = (T.TimestampType, T.TimestampNTZType, T.NumericType)


def refuse(problems: list[Problem], what: str) -> Invalid:
    listed = "; ".join(f"{p.field}: {p.problem}" if p.field else p.problem for p in problems)
    return Invalid("invalid_columns", f"the {what} cannot be summarised: {listed}", problems)


def _resolve(columns: Collection[str], wanted: tuple[str, ...], optional: tuple[str, ...],
             mapping: Mapping[str, str] | None, what: str) -> dict[str, str]:
    """Kernel column -> the data's column, for every wanted column and each optional one
    present; a mapping key that names no kernel column, or a column the data lacks, is
    refused with every such problem."""
    mapping = dict(mapping or {})
    known = wanted + optional
    problems = [Problem(f"{key!r} is not one of the model's columns ({', '.join(known)})",
                        field=key) for key in mapping if key not in known]
    have = set(columns)
    out = {}
    for key in known:
        name = mapping.get(key, key)
        if name in have:
            out[key] = name
        elif key in wanted or key in mapping:
            hint = "" if key in mapping else f" (map it: columns={{{key!r}: '<column>'}})"
            problems.append(Problem(f"the {what} have no column {name!r}{hint}", field=key))
    if problems:
        raise refuse(problems, what)
    return out


def _check_types(types: Mapping[str, T.DataType], names: dict[str, str], shape: ModelShape,
                 what: str) -> None:
    numeric = [n for n, kind in shape.features if kind == "numeric"]
    if shape.task != "multiclass_classification":
        numeric.append(prediction_column(shape))
    if shape.task == "regression":
        numeric.append(LABEL)
    problems = []
    for key, name in names.items():
        t = types[name]
        if key in (TIMESTAMP, LABEL_TIMESTAMP) and not isinstance(t, TIME_TYPES):
            problems.append(Problem(f"column {name!r} must be a timestamp or epoch seconds, "
                                    f"not {t.simpleString()}", field=key))
        elif key in numeric and not isinstance(t, T.NumericType):
            problems.append(Problem(f"column {name!r} must be numeric, not {t.simpleString()}",
                                    field=key))
        elif key == "probabilities" and not isinstance(t, (T.StructType, T.MapType,
                                                            T.ArrayType)):
            problems.append(Problem(f"column {name!r} must be a struct or a map with one "
                                    "field per class, or an array in the classes' order, "
                                    f"not {t.simpleString()}", field=key))
    if problems:
        raise refuse(problems, what)


def _probabilities(col: Column, t: T.DataType, classes: tuple[str, ...]) -> Column:
    """The multiclass prediction as the kernel's struct of one double per class."""
    if isinstance(t, T.ArrayType):  # a short array: the classes past its end are null
        fields = [F.get(col, i) for i in range(len(classes))]
    elif isinstance(t, T.MapType):  # a class absent: null
        fields = [F.try_element_at(col, F.lit(c)) for c in classes]
    else:
        have = {f.name for f in t.fields}
        fields = [col.getField(c) if c in have else F.lit(None) for c in classes]
    return F.struct(*[f.cast("double").alias(c) for f, c in zip(fields, classes, strict=True)])


def prediction_names(types: Mapping[str, T.DataType], shape: ModelShape,
                     mapping: Mapping[str, str] | None, *, with_id: bool) -> dict[str, str]:
    """Kernel column -> the predictions' column (of those with ``types``), checked: every
    wrong name, missing column and wrong type refused at once."""
    what = "predictions"
    wanted = (TIMESTAMP, *(n for n, _ in shape.features), *shape.cohort_keys,
              prediction_column(shape)) + ((PREDICTION_ID,) if with_id else ())
    optional = (LABEL, LABEL_TIMESTAMP) + (() if with_id else (PREDICTION_ID,))
    names = _resolve(types, wanted, optional, mapping, what)
    _check_types(types, names, shape, what)
    return names


def label_names(types: Mapping[str, T.DataType], shape: ModelShape,
                mapping: Mapping[str, str] | None) -> dict[str, str]:
    """Kernel column -> the labels' column (``prediction_id``, ``label``, ``timestamp``),
    checked as ``prediction_names``."""
    what = "labels"
    names = _resolve(types, LABEL_COLUMNS, (), mapping, what)
    problems = []
    if not isinstance(types[names[TIMESTAMP]], TIME_TYPES):
        problems.append(Problem(f"column {names[TIMESTAMP]!r} must be a timestamp or epoch "
                                f"seconds, not {types[names[TIMESTAMP]].simpleString()}",
                                field=TIMESTAMP))
    if shape.task == "regression" and not isinstance(types[names[LABEL]], T.NumericType):
        problems.append(Problem(f"column {names[LABEL]!r} must be numeric, not "
                                f"{types[names[LABEL]].simpleString()}", field=LABEL))
    if problems:
        raise refuse(problems, what)
    return names


def kernel_predictions(df: DataFrame, shape: ModelShape, mapping: Mapping[str, str] | None,
                       *, with_id: bool) -> DataFrame:
    """The predictions' kernel columns (and ``prediction_id`` when ``with_id``)."""
    types = {f.name: f.dataType for f in df.schema.fields}
    names = prediction_names(types, shape, mapping, with_id=with_id)
    cols = []
    for key, name in names.items():
        if key == PREDICTION_ID and not with_id:
            continue
        col = F.col("`" + name.replace("`", "``") + "`")  # any printable name, quoted
        if key == "probabilities":
            col = _probabilities(col, types[name], shape.classes)
        cols.append(col.alias(key))
    return df.select(*cols)


def _late_labels(labels: DataFrame, shape: ModelShape, mapping: Mapping[str, str] | None
                 ) -> DataFrame:
    """One label per prediction id: the earliest (by time, then value), so every run picks
    the same; rows without a label are no label."""
    names = label_names({f.name: f.dataType for f in labels.schema.fields}, shape, mapping)
    first = F.min(F.struct(F.col(f"`{names[TIMESTAMP]}`").alias("t"),
                           F.col(f"`{names[LABEL]}`").alias("v")))
    return (labels.where(F.col(f"`{names[LABEL]}`").isNotNull()
                         & F.col(f"`{names[TIMESTAMP]}`").isNotNull())
            .groupBy(F.col(f"`{names[PREDICTION_ID]}`").alias(PREDICTION_ID))
            .agg(first.alias("first"))
            .select(PREDICTION_ID, F.col("first.v").alias(_LATE),
                    F.col("first.t").alias(_LATE_TS)))


def _common(a: DataFrame, b: DataFrame, name_a: str, name_b: str, to: str
            ) -> tuple[Column, Column]:
    """Columns of two frames as one type: as they are when their types agree, else cast."""
    ta = a.schema[name_a].dataType
    tb = b.schema[name_b].dataType
    if ta == tb:
        return a[name_a], b[name_b]
    return a[name_a].cast(to), b[name_b].cast(to)


def _with_labels(preds: DataFrame, late: DataFrame, shape: ModelShape) -> DataFrame:
    """The predictions with their first label: the inline one, else the earliest late one."""
    p, q = _common(preds, late, PREDICTION_ID, PREDICTION_ID, "string")
    joined = preds.join(late, p == q, "left").drop(late[PREDICTION_ID])
    if LABEL not in preds.columns:
        return (joined.withColumnRenamed(_LATE, LABEL)
                .withColumnRenamed(_LATE_TS, LABEL_TIMESTAMP))
    to = "double" if shape.task == "regression" else "string"
    inline, later = _common(joined, joined, LABEL, _LATE, to)
    has_inline = F.col(LABEL).isNotNull()
    # an inline label without its own time came with its prediction
    at = LABEL_TIMESTAMP if LABEL_TIMESTAMP in preds.columns else TIMESTAMP
    ts_inline, ts_late = _common(joined, joined, at, _LATE_TS, "double")
    return (joined.withColumn(LABEL_TIMESTAMP, F.when(has_inline, ts_inline).otherwise(ts_late))
            .withColumn(LABEL, F.when(has_inline, inline).otherwise(later))
            .drop(_LATE, _LATE_TS))


def kernel_frame(predictions: DataFrame, labels: DataFrame | None, shape: ModelShape, *,
                 columns: Mapping[str, str] | None = None,
                 label_columns: Mapping[str, str] | None = None,
                 dedupe: bool = True) -> DataFrame:
    """The DataFrame the kernel folds: the predictions' kernel columns, one row per
    prediction id (``dedupe``), with their labels joined (module docstring)."""
    with_id = dedupe or labels is not None
    preds = kernel_predictions(predictions, shape, columns, with_id=with_id)
    if dedupe:
        rest = [c for c in preds.columns if c != PREDICTION_ID]
        preds = (preds.groupBy(PREDICTION_ID).agg(F.min(F.struct(*rest)).alias("row"))
                 .select(PREDICTION_ID, "row.*"))
    if labels is None:
        return preds.drop(PREDICTION_ID) if with_id else preds
    late = _late_labels(labels, shape, label_columns)
    return _with_labels(preds, late, shape).drop(PREDICTION_ID)
