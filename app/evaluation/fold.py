"""The summarizing kernel: predictions as columns folded into bucket summaries, and merge.

Every path that turns predictions into summaries goes through ``summary_rows``: the ingest
path (columns built from a request's records), an Arrow batch (``rows_from_arrow``: a lake
backfill, a Spark partition, a model server's own buffer), and the service's own upkeep.
The statistics are those of app/evaluation/summaries.py and app/monitoring; nothing here
computes one of its own.

An Arrow batch has the model's columns (docs/summaries.md):

- ``timestamp``: the prediction's time (an Arrow timestamp, naive meaning UTC, or epoch
  seconds); it alone chooses the bucket;
- one column per feature (numeric: any number type, null or NaN missing; categorical: any
  type, identified by its string form as everywhere else) and per cohort key;
- the prediction: ``score`` (binary), ``value`` (regression), or ``probabilities``
  (multiclass: a struct with one field per class, absent or null meaning 0);
- optionally ``label`` (the class, or the value for regression; null: not labeled) and
  ``label_timestamp`` (null or absent: the label came with the prediction, delay 0).
"""

from __future__ import annotations

import base64
from collections import defaultdict
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from app.errors import Invalid, Problem
from app.evaluation import cbpe
from app.evaluation.counting import drift_counts
from app.evaluation.embeddings import arrow_vectors
from app.evaluation.packing import (
    FORMAT,
    add_drift_into,
    pack_drift,
    pack_drift_counts,
    pack_outcome,
    unpack_drift,
    unpack_outcome,
)
from app.evaluation.summaries import (
    CompiledProfile,
    ModelShape,
    OutcomeSummary,
    Rows,
    outcome_summaries,
)
from app.monitoring.binning import Coded, category_key
from app.storage.summaries import DRIFT, OUTCOME, SummaryRow

TIMESTAMP, LABEL, LABEL_TIMESTAMP = "timestamp", "label", "label_timestamp"
PREDICTION_COLUMN = {"binary_classification": "score", "regression": "value",
                     "multiclass_classification": "probabilities"}


# --------------------------------------------------------------------------- Arrow columns


def _bad(column: str, problem: str) -> Invalid:
    return Invalid("invalid_batch", f"the batch cannot be summarised: {problem}",
                   [Problem(problem, field=column)])


def _array(table: pa.Table | pa.RecordBatch, name: str) -> pa.Array | None:
    if name not in table.column_names:
        return None
    col = table.column(name)
    if isinstance(col, pa.ChunkedArray):
        return col.chunk(0) if col.num_chunks == 1 else col.combine_chunks()
    return col


def _floats(arr: pa.Array | None, n: int, name: str) -> np.ndarray:
    if arr is None:
        return np.full(n, np.nan)
    try:
        x = arr if arr.type == pa.float64() else pc.cast(arr, pa.float64())
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        raise _bad(name, f"column {name!r} must be numeric, not {arr.type}") from None
    return x.to_numpy(zero_copy_only=False)  # nulls become NaN


def _vectors(arr: pa.Array | None, n: int, name: str) -> np.ndarray:
    x, problem = arrow_vectors(arr, n)
    if problem:
        raise _bad(name, f"column {name!r} {problem}")
    return x


def coded(arr: pa.Array | None, n: int) -> Coded:
    """A categorical column grouped by Arrow's dictionary encoding: each distinct value's
    string form (app.monitoring.binning's rule: NaN and null missing) is found once, not
    once per row."""
    if arr is None:
        return Coded((), np.full(n, -1, dtype=np.int64))
    enc = arr if pa.types.is_dictionary(arr.type) else pc.dictionary_encode(arr)
    names = [None if v is None or v != v else category_key(v)
             for v in enc.dictionary.to_pylist()]
    keys = tuple(sorted({k for k in names if k is not None}))
    rank = {k: i for i, k in enumerate(keys)}
    of_entry = np.array([-1 if k is None else rank[k] for k in names] + [-1], dtype=np.int64)
    index = enc.indices.fill_null(len(names)).to_numpy(zero_copy_only=False)
    return Coded(keys, of_entry[index.astype(np.int64)])


def _epoch(arr: pa.Array | None, name: str) -> np.ndarray | None:
    if arr is None:
        return None
    if pa.types.is_timestamp(arr.type):  # naive: UTC; nulls become NaN
        us = pc.cast(pc.cast(arr, pa.timestamp("us", arr.type.tz)), pa.int64())
        return us.to_numpy(zero_copy_only=False).astype(np.float64) / 1e6
    if pa.types.is_integer(arr.type) or pa.types.is_floating(arr.type):
        return _floats(arr, len(arr), name)
    raise _bad(name, f"column {name!r} must be a timestamp or epoch seconds, not {arr.type}")


def _probabilities(shape: ModelShape, arr: pa.Array | None, n: int) -> np.ndarray:
    out = np.zeros((n, len(shape.classes)), dtype=np.float64)
    if arr is None:
        return out
    if not pa.types.is_struct(arr.type):
        raise _bad("probabilities", "column 'probabilities' must be a struct with one field "
                   f"per class, not {arr.type}")
    fields = {arr.type.field(i).name: i for i in range(arr.type.num_fields)}
    for j, c in enumerate(shape.classes):
        if c in fields:
            out[:, j] = np.nan_to_num(_floats(arr.field(fields[c]), n, f"probabilities.{c}"),
                                      nan=0.0)
    return out


def _labels(shape: ModelShape, arr: pa.Array | None, n: int) -> np.ndarray:
    if arr is None:
        return np.full(n, np.nan)
    if shape.task == "regression":
        return _floats(arr, n, LABEL)
    c = coded(arr, n)
    if shape.task == "binary_classification":
        number = {k: float(k == shape.classes[1]) for k in shape.classes}
    else:
        number = {k: float(i) for i, k in enumerate(shape.classes)}
    of_key = np.array([number.get(k, np.nan) for k in c.keys] + [np.nan])
    return of_key[np.where(c.row_code >= 0, c.row_code, len(c.keys))]


def rows_from_arrow(shape: ModelShape, table: pa.Table | pa.RecordBatch,
                    version_id: int | np.ndarray) -> Rows:
    """The kernel's columns from an Arrow batch of the model's columns (module docstring);
    ``version_id``: one version for every row, or one per row."""
    n = table.num_rows
    ts = _epoch(_array(table, TIMESTAMP), TIMESTAMP)
    if ts is None:
        raise _bad(TIMESTAMP, f"the batch has no {TIMESTAMP!r} column")
    if not np.isfinite(ts).all():
        raise _bad(TIMESTAMP, f"column {TIMESTAMP!r} has null or non-finite values")
    out = Rows(version_id=np.broadcast_to(np.asarray(version_id, dtype=np.int64), (n,)).copy(),
               ts=ts)
    for name, kind in shape.features:
        arr = _array(table, name)
        out.features[name] = (_floats(arr, n, name) if kind == "numeric"
                              else _vectors(arr, n, name) if kind == "embedding"
                              else coded(arr, n))
    for key in shape.cohort_keys:
        out.cohorts[key] = coded(_array(table, key), n)
    column = PREDICTION_COLUMN[shape.task]
    prediction = _array(table, column)
    if shape.task == "binary_classification":
        out.score = _floats(prediction, n, column)
        usable = np.isfinite(out.score) & (out.score >= 0) & (out.score <= 1)
    elif shape.task == "regression":
        out.value = _floats(prediction, n, column)
        usable = np.isfinite(out.value)
    else:
        out.probabilities = _probabilities(shape, prediction, n)
        usable = np.isfinite(out.probabilities).all(axis=1)
    if not usable.all():  # what ingest refuses too: every prediction has a usable one
        raise _bad(column, f"column {column!r} has {int((~usable).sum())} missing or unusable "
                   "values (scores within [0, 1], finite values)")
    out.label = _labels(shape, _array(table, LABEL), n)
    label_ts = _epoch(_array(table, LABEL_TIMESTAMP), LABEL_TIMESTAMP)
    # a label without its own time (no column, or null) came with its prediction: delay 0
    delay = (np.zeros(n) if label_ts is None
             else np.where(np.isnan(label_ts), 0.0, label_ts - ts))
    out.label_delay = np.where(np.isnan(out.label), np.nan, delay)
    return out


# --------------------------------------------------------------------------- fold


def _groups(rows: Rows, bucket_seconds: float) -> tuple[np.ndarray, list[tuple[int, float]]]:
    """Each row's (version, bucket) group, numbered in (version, bucket) order, and the
    groups' keys; in passes over the rows, without sorting them."""
    bucket = np.floor(rows.ts / bucket_seconds).astype(np.int64)
    versions = rows.version_id
    if versions.shape[0] == 0:
        return np.zeros(0, dtype=np.int64), []
    if (versions == versions[0]).all():
        v_rank, v_keys = np.zeros(versions.shape[0], dtype=np.int64), [int(versions[0])]
    else:
        keys, v_rank = np.unique(versions, return_inverse=True)
        v_rank, v_keys = v_rank.reshape(-1), [int(v) for v in keys]
    lo = int(bucket.min())
    span = int(bucket.max()) - lo + 1
    if span * len(v_keys) <= 4 * versions.shape[0] + 1024:  # dense: a count per slot
        code = v_rank * span + (bucket - lo)
        present = np.flatnonzero(np.bincount(code, minlength=span * len(v_keys)))
        rank = np.zeros(span * len(v_keys), dtype=np.int64)
        rank[present] = np.arange(present.shape[0])
        group = rank[code]
    else:  # buckets far apart: sort the few distinct codes' rows
        present, group = np.unique(v_rank * span + (bucket - lo), return_inverse=True)
        group = group.reshape(-1)
    return group, [(v_keys[int(c // span)], float((lo + int(c % span)) * bucket_seconds))
                   for c in present]


def _when(epoch: float) -> datetime:
    return datetime.fromtimestamp(epoch, UTC)


def summary_rows(shape: ModelShape, rows: Rows, bucket_seconds: float, *,
                 count_predictions: bool,
                 profiles: dict[int, CompiledProfile]) -> list[SummaryRow]:
    """The summary rows of ``rows`` per (version, bucket): the outcome (predictions counted
    when ``count_predictions``; a label arriving later adds only its pair), and drift on the
    version's profile in ``profiles`` (none without one: drift is summarised once one
    exists)."""
    if rows.n == 0:
        return []
    group, keys = _groups(rows, bucket_seconds)
    out: list[SummaryRow] = []
    outcomes = outcome_summaries(shape, rows, group, len(keys),
                                 count_predictions=count_predictions)
    for (vid, start), o in zip(keys, outcomes, strict=True):
        out.append(SummaryRow(vid, _when(start), OUTCOME, "", o.n, pack_outcome(o)))
    if not count_predictions:
        return out
    for vid in sorted({v for v, _ in keys}):
        cp = profiles.get(vid)
        if cp is None:
            continue
        mine = [g for g, (v, _) in enumerate(keys) if v == vid]
        if len(mine) == len(keys):  # every row is this version's
            mine_rows, local = rows, group
        else:
            at = np.flatnonzero(np.isin(group, mine))
            mine_rows, local = rows.take(at), np.searchsorted(mine, group[at])
        sums = cbpe.sums_of_groups(shape.task, cp.cbpe, mine_rows.score,
                                   mine_rows.probabilities, local, len(mine))
        for g, (n, idx, val), s in zip(mine, drift_counts(shape, cp, mine_rows, local,
                                                          len(mine)), sums, strict=True):
            out.append(SummaryRow(vid, _when(keys[g][1]), DRIFT, cp.key, n,
                                  pack_drift_counts(n, cp.size, idx, val, s)))
    return out


def fold(shape: ModelShape, table: pa.Table | pa.RecordBatch, version_id: int | np.ndarray,
         profiles: dict[int, CompiledProfile], bucket_seconds: float) -> list[SummaryRow]:
    """An Arrow batch of predictions (labels beside them, if any) as summary rows."""
    return summary_rows(shape, rows_from_arrow(shape, table, version_id), bucket_seconds,
                        count_predictions=True, profiles=profiles)


# --------------------------------------------------------------------------- merge


def merged_payload(kind: str, profile_key: str, payloads: Iterable[bytes],
                   max_cohort_values: int | None = None) -> bytes:
    """One payload equal to the sum of ``payloads`` (summaries of one kind and profile)."""
    if kind == OUTCOME:
        total = OutcomeSummary()
        for p in payloads:
            total.add(unpack_outcome(p))
        if max_cohort_values is not None:
            total.cap_cohorts(max_cohort_values)
        return pack_outcome(total)
    drift = None
    for p in payloads:
        if drift is None:
            drift = unpack_drift(p, profile_key)
        else:
            add_drift_into(drift, p)
    if drift is None:
        raise ValueError("nothing to merge")
    return pack_drift(drift)


def merge(rows: Iterable[SummaryRow],
          max_cohort_values: int | None = None) -> list[SummaryRow]:
    """Summary rows added up per (version, bucket, kind, profile): exact, in any order."""
    groups: dict[tuple[int, datetime, str, str], list[SummaryRow]] = defaultdict(list)
    for r in rows:
        groups[(r.version_id, r.bucket_start, r.kind, r.profile_key)].append(r)
    out = []
    for (vid, bucket, kind, key), rs in sorted(groups.items()):
        payload = (rs[0].payload if len(rs) == 1 and max_cohort_values is None
                   else merged_payload(kind, key, (r.payload for r in rs), max_cohort_values))
        out.append(SummaryRow(vid, bucket, kind, key, sum(r.n for r in rs), payload))
    return out


def prediction_column(shape: ModelShape) -> str:
    return PREDICTION_COLUMN[shape.task]


def arrow_from_records(shape: ModelShape, records: list[dict[str, Any]]) -> pa.Table:
    """Records in the API's shape (timestamp, features, cohorts, prediction, label) as an
    Arrow batch of the model's columns: for tests and small callers."""
    cols: dict[str, list[Any]] = defaultdict(list)
    for r in records:
        cols[TIMESTAMP].append(r["timestamp"])
        features, cohorts = r.get("features") or {}, r.get("cohorts") or {}
        for name, kind in shape.features:
            v = features.get(name)
            cols[name].append(v if kind in ("numeric", "embedding") or v is None
                              else category_key(v))
        for key in shape.cohort_keys:
            v = cohorts.get(key)
            cols[key].append(None if v is None else category_key(v))
        p = r.get("prediction") or {}
        cols[prediction_column(shape)].append(p.get(prediction_column(shape)))
        cols[LABEL].append(r.get("label"))
        cols[LABEL_TIMESTAMP].append(r.get("label_timestamp"))
    types = {name: (pa.float64() if kind == "numeric" else pa.list_(pa.float64())
                    if kind == "embedding" else pa.string())
             for name, kind in shape.features}
    types.update({k: pa.string() for k in shape.cohort_keys})
    types[TIMESTAMP] = types[LABEL_TIMESTAMP] = pa.timestamp("us", "UTC")
    types[LABEL] = pa.float64() if shape.task == "regression" else pa.string()
    if shape.task == "multiclass_classification":
        types["probabilities"] = pa.struct([(c, pa.float64()) for c in shape.classes])
    else:
        types[prediction_column(shape)] = pa.float64()
    return pa.table({k: pa.array(v, type=types[k]) for k, v in cols.items()})


# --------------------------------------------------------------------------- producers


def from_profile_document(doc: dict[str, Any]) -> tuple[ModelShape, CompiledProfile | None]:
    """The model's shape and the compiled profile (None while the version has no reference)
    from GET .../versions/{v}/profile: what a producer elsewhere folds with."""
    shape = ModelShape(doc["task"], tuple((f["name"], f["type"]) for f in doc["features"]),
                       tuple(doc["cohort_keys"]), tuple(doc["classes"]))
    if doc.get("profile") is None:
        return shape, None
    return shape, CompiledProfile.compile(doc["profile"], doc["profile_key"])


def fold_pairs(shape: ModelShape, table: pa.Table | pa.RecordBatch,
               version_id: int | np.ndarray, bucket_seconds: float) -> list[SummaryRow]:
    """Labels that arrived after their predictions were folded: the batch holds each pair
    (the prediction's time, prediction and cohorts, the label and its time); only the pairs'
    sums are added, in the predictions' buckets."""
    return summary_rows(shape, rows_from_arrow(shape, table, version_id), bucket_seconds,
                        count_predictions=False, profiles={})


def upload_body(doc: dict[str, Any], rows: Iterable[SummaryRow], *, source: str,
                sequence: int) -> dict[str, Any]:
    """The POST /v1/summaries body of ``rows`` (folded on ``doc``'s profile)."""
    return {"format": FORMAT, "source": source, "sequence": sequence, "model": doc["model"],
            "version": doc["version"], "profile": doc["profile_key"],
            "bucket_seconds": doc["bucket_seconds"],
            "summaries": [{"bucket_start": r.bucket_start.isoformat().replace("+00:00", "Z"),
                           "kind": r.kind, "n": r.n,
                           "payload": base64.b64encode(r.payload).decode()} for r in rows]}
