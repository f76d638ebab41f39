"""A version's reference data set: JSON records, CSV or Parquet, read into one column per
feature, profiled and stored (what its windows' drift is measured against).

Columns are matched by name: each feature of the model's schema, and the prediction as
``score`` (binary), ``value`` (regression) or ``predicted_label`` (multiclass: the top class).
Other columns are ignored and listed in the response. Numeric columns must hold numbers
(null, NaN and infinities count as missing); categorical columns hold strings or integers.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
from sqlalchemy import Engine

from app.errors import Invalid, Malformed, Problem
from app.evaluation.profiles import build_profile
from app.evaluation.references import profile_options
from app.jsonvalues import NON_FINITE, find_unstorable, parse_json
from app.registry.versions import require_version
from app.settings import Settings
from app.storage import profiles, registry
from app.storage.registry import ModelRow

JSON_TYPES = ("application/json",)
CSV_TYPES = ("text/csv", "application/csv")
PARQUET_TYPES = ("application/vnd.apache.parquet", "application/x-parquet",
                 "application/octet-stream")
ACCEPTED = JSON_TYPES + CSV_TYPES + PARQUET_TYPES
PREDICTION_COLUMN = {"binary_classification": "score", "regression": "value",
                     "multiclass_classification": "predicted_label"}


@dataclass
class ReferenceColumns:
    n_rows: int
    features: dict[str, np.ndarray]
    prediction: tuple[str, np.ndarray] | None
    ignored: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)


def _bad(problems: list[Problem]) -> Invalid:
    return Invalid("validation_error",
                   "the reference data set is invalid; nothing was stored", problems)


def _read_table(path: Path, ctype: str) -> pa.Table:
    try:
        if ctype in CSV_TYPES:
            return pacsv.read_csv(path)
        with open(path, "rb") as f:
            magic = f.read(4)
        if ctype in PARQUET_TYPES:
            if magic != b"PAR1":
                raise Malformed("invalid_parquet", "the body is not a Parquet file",
                                [Problem("missing PAR1 magic bytes", field="body")])
            return pq.read_table(path)
    except Malformed:
        raise
    except (pa.ArrowException, OSError) as exc:
        kind = "CSV" if ctype in CSV_TYPES else "Parquet"
        raise Malformed(f"invalid_{kind.lower()}", f"the body is not valid {kind}",
                        [Problem(str(exc).splitlines()[0][:300], field="body")]) from None
    raise AssertionError(ctype)


def _json_table(raw: bytes) -> dict[str, list[Any]]:
    body = parse_json(raw)
    records = body.get("records") if isinstance(body, dict) else body
    if not isinstance(records, list) or not all(isinstance(r, dict) for r in records):
        raise _bad([Problem("send {\"records\": [{column: value, ...}, ...]}", field="records")])
    names: dict[str, None] = {}
    for r in records:
        names.update(dict.fromkeys(r))
    return {name: [r.get(name) for r in records] for name in names}


def _numeric(name: str, values: Any) -> np.ndarray:
    if isinstance(values, pa.ChunkedArray):
        t = values.type
        if not (pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_null(t)
                or pa.types.is_decimal(t)):
            raise _bad([Problem(f"numeric feature column holds {t}", field=name)])
        return values.cast(pa.float64()).to_numpy(zero_copy_only=False)
    bad = [i for i, v in enumerate(values)
           if v is not None and v is not NON_FINITE
           and (isinstance(v, bool) or not isinstance(v, (int, float)))]
    if bad:
        raise _bad([Problem(f"numeric feature column holds a non-number at row {bad[0]}",
                            field=name)])
    out = np.array([np.nan if v is None or v is NON_FINITE else float(v) for v in values],
                   dtype=np.float64)
    return out


def _categorical(name: str, values: Any) -> np.ndarray:
    if isinstance(values, pa.ChunkedArray):
        t = values.type
        if pa.types.is_floating(t) or pa.types.is_nested(t):
            raise _bad([Problem(f"categorical column holds {t}; send strings", field=name)])
        values = values.to_pylist()
    out = []
    for i, v in enumerate(values):
        if v is None:
            out.append(None)
        elif isinstance(v, str):
            out.append(v)
        elif isinstance(v, int) and not isinstance(v, bool):
            out.append(str(v))
        else:
            raise _bad([Problem(f"categorical column holds a non-string at row {i}",
                                field=name)])
    return np.array(out, dtype=object)


def read_reference(path: Path, ctype: str, model: ModelRow) -> ReferenceColumns:
    if ctype in JSON_TYPES:
        columns: dict[str, Any] = _json_table(path.read_bytes())
        n_rows = len(next(iter(columns.values()), []))
        names = list(columns)
    else:
        table = _read_table(path, ctype)
        columns = {name: table.column(name) for name in table.column_names}
        n_rows, names = table.num_rows, table.column_names
    if n_rows == 0:
        raise _bad([Problem("the reference data set has no rows", field="body")])
    types = {f["name"]: f["type"] for f in model.features}
    pred_col = PREDICTION_COLUMN[model.task]
    known = set(types) | {pred_col, "label"}
    out = ReferenceColumns(n_rows=n_rows, features={}, prediction=None,
                           ignored=sorted(set(names) - known),
                           missing=sorted(set(types) - set(names)))
    problems: list[Problem] = []
    for name, kind in types.items():
        if name not in columns:
            continue
        try:
            out.features[name] = (_numeric(name, columns[name]) if kind == "numeric"
                                  else _categorical(name, columns[name]))
        except Invalid as err:
            problems += err.details
    if pred_col in columns:
        try:
            if pred_col == "predicted_label":
                values = _categorical(pred_col, columns[pred_col])
                classes = set(model.classes or [])
                if any(v is not None and v not in classes for v in values):
                    raise _bad([Problem("predicted_label holds a class the model does not "
                                        "have", field=pred_col)])
                out.prediction = ("categorical", values)
            else:
                values = _numeric(pred_col, columns[pred_col])
                if pred_col == "score" and np.any((values < 0) | (values > 1)):
                    raise _bad([Problem("score must lie within [0, 1]", field=pred_col)])
                out.prediction = ("numeric", values)
        except Invalid as err:
            problems += err.details
    if problems:
        raise _bad(problems)
    if not out.features and out.prediction is None:
        raise _bad([Problem("no column matches a feature of the model or the prediction "
                            f"column {pred_col!r}", field="body")])
    return out


def store_reference(*, engine: Engine, settings: Settings, model_name: str, version: str,
                    path: Path, ctype: str) -> dict[str, Any]:
    """Read, profile and store a version's reference; returns what was stored."""
    model, v = require_version(engine=engine, model=model_name, version=version)
    model = registry.for_version(model, v.features)  # the version's own features, if any
    cols = read_reference(path, ctype, model)
    profile = build_profile(model, cols.features, cols.prediction, cols.n_rows,
                            **profile_options(settings))
    bad = find_unstorable(profile)
    if bad:  # e.g. a category holding a NUL character
        columns = sorted({path.split(".")[1] if path.startswith("features.") else "prediction"
                          for path, _ in bad})
        raise _bad([Problem("holds a value with characters that cannot be stored (NUL or a "
                            "lone surrogate)", field=c) for c in columns])
    with engine.begin() as conn:
        profiles.put_profile(conn=conn, model_id=model.id, version_id=v.id, source="upload",
                             n_rows=cols.n_rows, profile=profile)
    return {
        "model": model.name, "version": version, "n_rows": cols.n_rows,
        "features": {name: {"n_valid": c["n_valid"], "n_missing": c["n_missing"],
                            "bins": len(c["counts"])}
                     for name, c in profile["features"].items()},
        "prediction": profile["prediction"] is not None,
        "ignored_columns": cols.ignored, "missing_columns": cols.missing,
    }
