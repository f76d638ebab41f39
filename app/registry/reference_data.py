"""A version's reference data set: JSON records, CSV or Parquet, read into one column per
feature, profiled and stored (what its windows' drift is measured against).

Columns are matched by name: each feature of the model's schema, and the prediction as
``score`` (binary), ``value`` (regression) or ``predicted_label`` (multiclass: the top class).
Other columns are ignored and listed in the response. Numeric columns must hold numbers
(null, NaN and infinities count as missing); categorical columns hold strings or integers.

What an upload becomes is bounded before it is spent (app/registry/limits.py): rows
(MODELMON_REFERENCE_MAX_ROWS) counted on a Parquet file's metadata and on a first pass that
streams a CSV; the bytes of the columns read (MODELMON_REFERENCE_MAX_BYTES), from a Parquet
file's metadata and on that pass; a JSON document, parsed whole, held to the JSON body limit.
Only the columns the model reads are read, and categorical ones are kept dictionary-encoded.
"""

from __future__ import annotations

import logging
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
from sqlalchemy import Engine

from app.errors import Invalid, Malformed, Problem, TooLarge
from app.evaluation import cbpe
from app.evaluation.embeddings import arrow_vectors
from app.evaluation.profiles import build_profile
from app.evaluation.references import profile_options
from app.jsonvalues import NON_FINITE, find_unstorable, parse_json
from app.registry.limits import json_upload, too_large
from app.registry.versions import guard_replacement, require_version
from app.settings import Settings
from app.storage import profiles, registry
from app.storage.registry import ModelRow

JSON_TYPES = ("application/json",)
CSV_TYPES = ("text/csv", "application/csv")
PARQUET_TYPES = ("application/vnd.apache.parquet", "application/x-parquet",
                 "application/octet-stream")
ACCEPTED = JSON_TYPES + CSV_TYPES + PARQUET_TYPES
log = logging.getLogger("modelmon.registry")
LABEL, PROBABILITIES = "label", "probabilities"
PREDICTION_COLUMN = {"binary_classification": "score", "regression": "value",
                     "multiclass_classification": "predicted_label"}


@dataclass
class ReferenceColumns:
    n_rows: int
    features: dict[str, np.ndarray]
    prediction: tuple[str, np.ndarray] | None
    ignored: list[str] = field(default_factory=list)
    # CBPE (app/evaluation/cbpe.py): the raw scores or class probabilities and the labels
    scored: np.ndarray | None = None
    label: np.ndarray | None = None
    missing: list[str] = field(default_factory=list)


def _bad(problems: list[Problem]) -> Invalid:
    return Invalid("validation_error",
                   "the reference data set is invalid; nothing was stored", problems)


def _read_table(path: Path, ctype: str, wanted: dict[str, str], settings: Settings
                ) -> tuple[dict[str, pa.ChunkedArray], int, list[str]]:
    """(the columns of ``wanted`` the file has, its rows, all its column names) of a CSV or
    Parquet upload, within the limits."""
    try:
        if ctype in CSV_TYPES:
            return _read_csv(path, wanted, settings)
        with open(path, "rb") as f:
            magic = f.read(4)
        if ctype in PARQUET_TYPES:
            if magic != b"PAR1":
                raise Malformed("invalid_parquet", "the body is not a Parquet file",
                                [Problem("missing PAR1 magic bytes", field="body")])
            return _read_parquet(path, wanted, settings)
    except (Malformed, Invalid, TooLarge):
        raise
    except (pa.ArrowException, OSError) as exc:
        kind = "CSV" if ctype in CSV_TYPES else "Parquet"
        raise Malformed(f"invalid_{kind.lower()}", f"the body is not valid {kind}",
                        [Problem(str(exc).splitlines()[0][:300], field="body")]) from None
    raise AssertionError(ctype)


def _too_many_rows(rows: int, settings: Settings) -> TooLarge:
    return too_large(f"the reference data set has {rows} rows or more",
                     "reference_max_rows", settings.reference_max_rows, "body")


def _read_csv(path: Path, wanted: dict[str, str], settings: Settings
              ) -> tuple[dict[str, pa.ChunkedArray], int, list[str]]:
    """The wanted columns, once a first pass that streams them as text, a batch at a time,
    has counted their rows and bytes within the limits; then read with types inferred over
    the whole file."""
    names = pacsv.open_csv(path).schema.names  # the header, from the first block
    include = [n for n in names if n in wanted] or names[:1]
    rows = nbytes = 0
    for batch in pacsv.open_csv(path, convert_options=pacsv.ConvertOptions(
            include_columns=include, column_types=dict.fromkeys(include, pa.string()))):
        rows += batch.num_rows
        nbytes += batch.nbytes
        if rows > settings.reference_max_rows:
            raise _too_many_rows(rows, settings)
        if nbytes > settings.reference_max_bytes:
            raise too_large(f"the reference's columns hold {nbytes} bytes or more once read",
                            "reference_max_bytes", settings.reference_max_bytes, "body")
    table = pacsv.read_csv(path, convert_options=pacsv.ConvertOptions(include_columns=include))
    return {n: table.column(n) for n in include if n in wanted}, table.num_rows, names


def _read_parquet(path: Path, wanted: dict[str, str], settings: Settings
                  ) -> tuple[dict[str, pa.ChunkedArray], int, list[str]]:
    """The wanted columns, once the file's metadata (its size, rows, the columns' types and
    decompressed sizes) says they are within the limits."""
    with open(path, "rb") as f:
        f.seek(-8, 2)
        footer = struct.unpack("<I", f.read(4))[0]
    if footer > settings.max_body_bytes:
        raise too_large(f"the Parquet metadata is {footer} bytes", "max_body_bytes",
                        settings.max_body_bytes, "metadata")
    meta = pq.ParquetFile(path).metadata
    if meta.num_rows > settings.reference_max_rows:
        raise _too_many_rows(meta.num_rows, settings)
    schema = meta.schema.to_arrow_schema()
    include = [n for n in schema.names if n in wanted]
    bad = [p for n in include if (p := _type_problem(n, wanted[n], schema.field(n).type))]
    if bad:
        raise _bad(bad)
    sizes = dict.fromkeys(include, 0)
    for g in range(meta.num_row_groups):
        group = meta.row_group(g)
        for c in range(group.num_columns):
            top = group.column(c).path_in_schema.split(".")[0]
            if top in sizes:
                sizes[top] += group.column(c).total_uncompressed_size
    if sum(sizes.values()) > settings.reference_max_bytes:
        largest = max(sizes, key=lambda n: sizes[n])
        raise too_large(f"the reference's columns hold {sum(sizes.values())} bytes once "
                        f"decompressed (the largest, {largest[:200]!r}, {sizes[largest]})",
                        "reference_max_bytes", settings.reference_max_bytes, largest[:200])
    strings = [n for n in include if wanted[n] == "categorical"
               and (pa.types.is_string(schema.field(n).type)
                    or pa.types.is_large_string(schema.field(n).type))]
    table = pq.read_table(path, columns=include, read_dictionary=strings)
    return {n: table.column(n) for n in include}, meta.num_rows, schema.names


def _type_problem(name: str, kind: str, t: pa.DataType) -> Problem | None:
    """What is wrong with an Arrow column type for a numeric, categorical or embedding
    column."""
    if kind == "embedding":
        if not (pa.types.is_list(t) or pa.types.is_large_list(t)
                or pa.types.is_fixed_size_list(t) or pa.types.is_null(t)):
            return Problem(f"embedding feature column holds {t}; send a list<float> column",
                           field=name)
    elif kind == "numeric":
        if not (pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_null(t)
                or pa.types.is_decimal(t)):
            return Problem(f"numeric feature column holds {t}", field=name)
    elif pa.types.is_floating(t) or pa.types.is_nested(t):
        return Problem(f"categorical column holds {t}; send strings", field=name)
    return None


def _json_table(raw: bytes) -> dict[str, list[Any]]:
    body = parse_json(raw)
    records = body.get("records") if isinstance(body, dict) else body
    if not isinstance(records, list) or not all(isinstance(r, dict) for r in records):
        raise _bad([Problem("send {\"records\": [{column: value, ...}, ...]}", field="records")])
    names: dict[str, None] = {}
    for r in records:
        names.update(dict.fromkeys(r))
    return {name: [r.get(name) for r in records] for name in names}


def _first_non_number(values: pa.ChunkedArray) -> tuple[int, str] | None:
    """The first row (0: the first after a CSV's header) of a text column whose value is not
    a number, with that value."""
    for i, v in enumerate(values.to_pylist()):
        if v is None:
            continue
        try:
            float(v)
        except (TypeError, ValueError):
            return i, str(v)
    return None


def _shown(v: Any) -> str:
    """A refused value as a message shows it: short, and never the repr of a nested list or
    object (which may be nested past the interpreter's recursion limit)."""
    if isinstance(v, (list, dict)):
        return "an array" if isinstance(v, list) else "an object"
    return repr(v)[:60]


def _numeric(name: str, values: Any) -> np.ndarray:
    if isinstance(values, pa.ChunkedArray):
        problem = _type_problem(name, "numeric", values.type)
        first = (_first_non_number(values) if problem is not None
                 and (pa.types.is_string(values.type) or pa.types.is_large_string(values.type))
                 else None)
        if first is not None:
            row, value = first
            problem = Problem(
                f"numeric feature column holds {value[:50]!r} at row {row + 1} (the first row "
                f"after the header is row 1; line {row + 2} of a CSV file without line breaks "
                "in quoted values); send a number, or leave it empty for a missing value",
                field=name)
        if problem is not None:
            raise _bad([problem])
        return values.cast(pa.float64()).to_numpy(zero_copy_only=False)
    bad = [i for i, v in enumerate(values)
           if v is not None and v is not NON_FINITE
           and (isinstance(v, bool) or not isinstance(v, (int, float)))]
    if bad:
        raise _bad([Problem(f"numeric feature column holds a non-number, {_shown(values[bad[0]])}, "
                            f"at records[{bad[0]}]", field=name)])
    out = np.array([np.nan if v is None or v is NON_FINITE else float(v) for v in values],
                   dtype=np.float64)
    return out


def _embedding(name: str, values: Any, dim: int) -> np.ndarray:
    """An embedding column as rows x dim floats (NaN rows missing): every vector ``dim``
    finite numbers."""
    if isinstance(values, pa.ChunkedArray):
        problem = _type_problem(name, "embedding", values.type)
        if problem is not None:
            raise _bad([problem])
        if pa.types.is_null(values.type):
            return np.full((len(values), dim), np.nan)
        x, text = arrow_vectors(values.combine_chunks(), len(values), dim)
        if text:
            raise _bad([Problem(f"embedding feature column {text} (dim {dim})", field=name)])
        return x
    out = np.full((len(values), dim), np.nan)
    for i, v in enumerate(values):
        if v is None:
            continue
        if (not isinstance(v, list) or len(v) != dim or any(
                x is NON_FINITE or isinstance(x, bool) or not isinstance(x, (int, float))
                for x in v)):
            raise _bad([Problem(f"embedding feature column holds {_shown(v)} at records[{i}]"
                                f"; send a list of {dim} finite numbers, or null",
                                field=name)])
        out[i] = v
    return out


def _as_category(v: Any) -> str | None:
    """A categorical value as stored; TypeError for one that is neither a string nor an
    integer."""
    if v is None or isinstance(v, str):
        return v
    if isinstance(v, int) and not isinstance(v, bool):
        return str(v)
    raise TypeError(type(v).__name__)


def _non_string(name: str, row: int) -> Invalid:
    return _bad([Problem(f"categorical column holds a non-string at row {row}", field=name)])


def _categorical(name: str, values: Any) -> np.ndarray:
    if isinstance(values, pa.ChunkedArray):
        problem = _type_problem(name, "categorical", values.type)
        if problem is not None:
            raise _bad([problem])
        return _arrow_categories(name, values)
    out = np.empty(len(values), dtype=object)
    for i, v in enumerate(values):
        try:
            out[i] = _as_category(v)
        except TypeError:
            raise _non_string(name, i) from None
    return out


def _arrow_categories(name: str, values: pa.ChunkedArray) -> np.ndarray:
    """A categorical Arrow column as strings, through its dictionary: each distinct value is
    converted once, and the rows share them."""
    if not pa.types.is_dictionary(values.type):
        values = values.dictionary_encode()
    values = values.unify_dictionaries()
    if values.num_chunks == 0:
        return np.empty(0, dtype=object)
    words = values.chunk(0).dictionary.to_pylist()
    codes = np.concatenate([pc.fill_null(c.indices, len(words)).to_numpy(zero_copy_only=False)
                            for c in values.chunks]).astype(np.int64)
    lookup = np.empty(len(words) + 1, dtype=object)
    for k, v in enumerate(words):
        try:
            lookup[k] = _as_category(v)
        except TypeError:
            raise _non_string(name, int(np.argmax(codes == k))) from None
    lookup[len(words)] = None
    return lookup[codes]


def _refuse(problems: list[Problem], features: list[str], names: list[str]) -> None:
    """One 422 with every problem of the values and every feature without a column: such a
    feature would profile as empty, and every production value of it would then look new."""
    have = set(names)
    missing = [f for f in features if f not in have]
    problems = problems + [Problem("no column of this name in the reference data set",
                                   field=m) for m in missing]
    if not missing and problems:
        raise _bad(problems)
    if missing:
        raise Invalid(
            "validation_error",
            f"the reference data set has no column for {len(missing)} of the model's "
            f"{len(features)} features ({', '.join(repr(m) for m in missing)}); nothing was "
            "stored. Add the columns (empty values are missing values), or register the "
            "version with its own feature list (features) when it does not use them",
            problems)


def _probability_columns(model: ModelRow) -> list[str]:
    """A multiclass reference's class probabilities, one column per class (for CBPE)."""
    if model.task != "multiclass_classification":
        return []
    return [f"{PROBABILITIES}.{c}" for c in model.classes or ()]


def _cbpe_columns(columns: dict[str, Any], model: ModelRow, out: ReferenceColumns
                  ) -> list[Problem]:
    """The labels and raw scores CBPE calibrates on (app/evaluation/cbpe.py): ``label``
    (a class of the model) beside ``score`` (binary) or every ``probabilities.<class>``
    column (multiclass, within [0, 1]); problems of either."""
    if LABEL not in columns or model.task == "regression":
        return []
    try:
        out.label = _categorical(LABEL, columns[LABEL])
        if any(v is not None and v not in set(model.classes or ()) for v in out.label):
            return [Problem("label holds a class the model does not have", field=LABEL)]
        if model.task == "binary_classification":
            out.scored = None if out.prediction is None else out.prediction[1]
            return []
        names = _probability_columns(model)
        if not all(n in columns for n in names):
            return []
        out.scored = np.column_stack([_numeric(n, columns[n]) for n in names])
        if np.any((out.scored < 0) | (out.scored > 1)):
            return [Problem("class probabilities must lie within [0, 1]", field=PROBABILITIES)]
    except Invalid as err:
        return list(err.details)
    return []


def read_reference(path: Path, ctype: str, model: ModelRow, settings: Settings
                   ) -> ReferenceColumns:
    types = {f["name"]: f["type"] for f in model.features}
    dims = {f["name"]: int(f["dim"]) for f in model.features if f["type"] == "embedding"}
    pred_col = PREDICTION_COLUMN[model.task]
    columns: dict[str, Any]
    if dims and ctype in CSV_TYPES:
        raise _bad([Problem("a CSV file cannot hold the embedding feature(s) "
                            f"{', '.join(map(repr, dims))}: send the reference as JSON records "
                            "(a list of numbers per value) or Parquet (a list<float> column)",
                            field=next(iter(dims)))])
    if ctype in JSON_TYPES:
        columns = _json_table(json_upload(path, settings, "send larger references as CSV or "
                                          "Parquet"))
        n_rows = len(next(iter(columns.values()), []))
        names = list(columns)
        if n_rows > settings.reference_max_rows:
            raise _too_many_rows(n_rows, settings)
    else:
        wanted = {**types, pred_col: ("categorical" if pred_col == "predicted_label"
                                      else "numeric"), LABEL: "categorical",
                  **dict.fromkeys(_probability_columns(model), "numeric")}
        columns, n_rows, names = _read_table(path, ctype, wanted, settings)
    if n_rows == 0:
        raise _bad([Problem("the reference data set has no rows", field="body")])
    known = set(types) | {pred_col, LABEL, *_probability_columns(model)}
    out = ReferenceColumns(n_rows=n_rows, features={}, prediction=None,
                           ignored=sorted(set(names) - known))
    problems: list[Problem] = []
    for name, kind in types.items():
        if name not in columns:
            continue
        try:
            out.features[name] = (_numeric(name, columns[name]) if kind == "numeric"
                                  else _embedding(name, columns[name], dims[name])
                                  if kind == "embedding" else _categorical(name, columns[name]))
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
    problems += _cbpe_columns(columns, model, out)
    _refuse(problems, list(types), names)
    if not out.features and out.prediction is None:
        raise _bad([Problem("no column matches a feature of the model or the prediction "
                            f"column {pred_col!r}", field="body")])
    return out


def _warnings(n_rows: int, settings: Settings, where: str) -> list[str]:
    """What the upload's answer warns about: a reference too small to measure drift against
    (stored anyway: a small sample may be all there is, and it is the owner's call)."""
    if n_rows >= settings.reference_min_rows:
        return []
    text = (f"the reference has {n_rows} rows, fewer than MODELMON_REFERENCE_MIN_ROWS "
            f"({settings.reference_min_rows}): with {settings.reference_bins} bins per "
            "feature, drift measured against it is mostly noise; upload a larger sample "
            "(thousands of rows) when you have one")
    log.warning("reference of %s: %s", where, text)
    return [text]


def store_reference(*, engine: Engine, settings: Settings, model_name: str, version: str,
                    path: Path, ctype: str, replace: bool = False) -> dict[str, Any]:
    """Read, profile and store a version's reference; returns what was stored. A different
    uploaded reference of a version with stored predictions needs ``replace``
    (versions.guard_replacement); a baseline taken from traffic is replaced freely."""
    model, v = require_version(engine=engine, model=model_name, version=version)
    model = registry.for_version(model, v.features)  # the version's own features, if any
    cols = read_reference(path, ctype, model, settings)
    profile = build_profile(model, cols.features, cols.prediction, cols.n_rows,
                            **profile_options(settings))
    section = cbpe.reference_section(model.task, tuple(model.classes or ()), cols.scored,
                                     cols.label)
    if section is not None:
        profile["cbpe"] = section
    bad = find_unstorable(profile)
    if bad:  # e.g. a category holding a NUL character
        columns = sorted({path.split(".")[1] if path.startswith("features.") else "prediction"
                          for path, _ in bad})
        raise _bad([Problem("holds a value with characters that cannot be stored (NUL or a "
                            "lone surrogate)", field=c) for c in columns])
    with engine.begin() as conn:
        stored = profiles.get_profile(conn=conn, version_id=v.id)
        guard_replacement(conn, model, v, "reference",
                          stored["profile"] if stored and stored["source"] == "upload" else None,
                          profile, replace)
        profiles.put_profile(conn=conn, model_id=model.id, version_id=v.id, source="upload",
                             n_rows=cols.n_rows, profile=profile)
    return {
        "model": model.name, "version": version, "n_rows": cols.n_rows,
        "warnings": _warnings(cols.n_rows, settings, f"{model.name}/{version}"),
        "features": {name: {"n_valid": c["n_valid"], "n_missing": c["n_missing"],
                            "bins": len(c["counts"])}
                     for name, c in profile["features"].items()},
        "prediction": profile["prediction"] is not None,
        "performance_estimation": None if section is None else {
            "n_labeled": section["n_labeled"], "realized": section["realized"],
            "calibrated": [bool(m["x"]) for m in section["maps"]]},
        "ignored_columns": cols.ignored, "missing_columns": cols.missing,
    }
