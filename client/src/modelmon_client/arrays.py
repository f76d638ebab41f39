"""Whole batches from numpy arrays and pandas frames: one row, one record. numpy and pandas
are never imported here: objects are recognised by what they offer (``columns``, ``tolist``)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import date
from time import time
from typing import Any
from uuid import uuid4

from modelmon_client._sender import PREDICTION

_SCALARS = (str, bytes, int, float, bool, date)


def as_list(values: Any) -> list[Any]:
    """A column as a list of Python values: Series and arrays through ``tolist``, a
    DataFrame as one mapping per row."""
    if hasattr(values, "columns") and hasattr(values, "to_dict"):
        return values.to_dict("records")
    if hasattr(values, "tolist"):
        return values.tolist()
    return list(values)


def _per_row(values: Any, n: int, what: str) -> list[Any]:
    """One value per row: a column of length n, or one scalar for every row."""
    if values is None or isinstance(values, _SCALARS) or (
            hasattr(values, "ndim") and values.ndim == 0):
        return [values.item() if hasattr(values, "item") else values] * n
    out = as_list(values)
    if len(out) != n:
        raise ValueError(f"{what} has {len(out)} rows, features have {n}")
    return out


def feature_rows(features: Any, feature_names: Sequence[str] | None) -> list[dict[str, Any]]:
    if hasattr(features, "columns"):  # a DataFrame: column by column, then rows
        names = [str(c) for c in features.columns]
        columns = [features[c].tolist() for c in features.columns]
        return [dict(zip(names, row, strict=True)) for row in zip(*columns, strict=True)]
    if hasattr(features, "tolist") and getattr(features, "ndim", 2) != 2:
        raise ValueError("features must be 2-D (rows x features)")
    rows = as_list(features)
    if rows and isinstance(rows[0], Mapping):
        return [dict(r) for r in rows]
    if feature_names is None:
        raise ValueError("rows of values need feature_names")
    names = [str(n) for n in feature_names]
    for r in rows[:1]:
        if len(r) != len(names):
            raise ValueError(f"rows have {len(r)} values, feature_names has {len(names)}")
    return [dict(zip(names, r, strict=True)) for r in rows]


def _cohort_rows(cohorts: Any, n: int) -> list[dict[str, Any] | None]:
    if cohorts is None:
        return [None] * n
    if isinstance(cohorts, Mapping):  # {key: column or one value}
        columns = {k: _per_row(v, n, f"cohorts[{k!r}]") for k, v in cohorts.items()}
        return [{k: col[i] for k, col in columns.items()} for i in range(n)]
    return _per_row(cohorts, n, "cohorts")


def batch_entries(features: Any, *, predictions: Any, feature_names: Sequence[str] | None,
                  cohorts: Any, labels: Any, prediction_ids: Sequence[str] | None,
                  latency_ms: Any, timestamp: Any) -> list[tuple[Any, ...]]:
    rows = feature_rows(features, feature_names)
    n = len(rows)
    preds = _per_row(predictions, n, "predictions")
    ids = ([str(uuid4()) for _ in range(n)] if prediction_ids is None
           else [str(p) for p in _per_row(prediction_ids, n, "prediction_ids")])
    coh = _cohort_rows(cohorts, n)
    labs = _per_row(labels, n, "labels")
    lat = _per_row(latency_ms, n, "latency_ms")
    ts = _per_row(time() if timestamp is None else timestamp, n, "timestamp")
    return [(PREDICTION, ids[i], ts[i], rows[i], preds[i], coh[i], labs[i], lat[i])
            for i in range(n)]
