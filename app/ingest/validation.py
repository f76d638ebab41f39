"""Validation of prediction and label batches against each model's registered schema.

Every record is checked and every problem collected (index, field, problem), so a client
fixes a batch in one round trip. The checks are cheap dict and float operations per record;
nothing here touches the database: the caller loads the schemas of the batch's models first.
"""

from __future__ import annotations

import difflib
import json
import math
from datetime import UTC, datetime
from typing import Any, NamedTuple

from app.errors import Invalid, NotFound, Problem, TooLarge
from app.ingest.names import MAX_FEATURE_NAME, feature_name_problem
from app.ingest.rows import LabelRow, Parsed, PredictionRow
from app.ingest.schema import Limits, ModelSchema
from app.ingest.thin import THIN_FEATURES, record_problems
from app.ingest.values import as_float as _as_float
from app.ingest.values import describe as _describe
from app.ingest.values import vector as _vector
from app.jsonvalues import NonFinite, text_problem

MAX_ID_LEN = 200
# A model server's inference time above an hour is a unit mistake (seconds sent as ms, or
# nanoseconds), and one absurd value would poison the latency histogram's sum for good.
MAX_LATENCY_MS = 3_600_000.0
MAX_STRING_LEN = 200
PREDICTION_FIELDS = frozenset(
    {"model", "version", "prediction_id", "timestamp", "features", "prediction", "cohorts",
     "label", "latency_ms"}
)
LABEL_FIELDS = frozenset({"model", "prediction_id", "label", "timestamp"})
PAYLOAD_FIELDS = {
    "binary_classification": ("score", frozenset({"score", "label"})),
    "multiclass_classification": ("probabilities", frozenset({"probabilities", "label"})),
    "regression": ("value", frozenset({"value", "label"})),
}


# One encoder for every record: json.dumps with arguments builds a new encoder per call.
_to_json = json.JSONEncoder(separators=(",", ":"), allow_nan=False).encode


def _text(value: Any) -> Any:
    """Integers where text belongs (category codes, class labels) as their decimal string."""
    return str(value) if isinstance(value, int) and not isinstance(value, bool) else value


def _short_string(value: Any, what: str = "a string") -> tuple[str | None, str | None]:
    if not isinstance(value, str):
        return None, f"must be {what}, got {_describe(value)}"
    if not value:
        return None, "must not be empty"
    if len(value) > MAX_STRING_LEN:
        return None, f"must be at most {MAX_STRING_LEN} characters"
    return (None, p) if (p := text_problem(value)) else (value, None)


def parse_timestamp(value: Any, limits: Limits) -> tuple[datetime | None, str | None]:
    if not isinstance(value, str):
        return None, f"must be an ISO 8601 string, got {_describe(value)}"
    try:
        ts = datetime.fromisoformat(value)
        ts = ts.replace(tzinfo=UTC) if ts.tzinfo is None else ts.astimezone(UTC)
    except ValueError:
        return None, "not an ISO 8601 timestamp (e.g. 2026-11-23T10:15:00Z)"
    except OverflowError:  # e.g. 9999-12-31T23:59:59-14:00, past the calendar in UTC
        return None, "outside the calendar once in UTC; check the sender's clock"
    if ts > limits.now + limits.max_future:
        return None, "more than the allowed skew in the future; check the sender's clock"
    if ts < limits.now - limits.max_past:
        return None, f"older than the accepted {limits.max_past.days} days"
    return ts, None


def _class_label(value: Any, classes: frozenset[str]) -> tuple[str | None, str | None]:
    """Classification labels are class names; integers are accepted for integer-named classes."""
    value = _text(value)
    if not isinstance(value, str):
        return None, f"must be a class name (string), got {_describe(value)}"
    if value not in classes:
        names = sorted(classes)
        listed = ", ".join(repr(c) for c in names[:20]) + (", ..." if len(names) > 20 else "")
        return None, f"not one of the model's classes ({listed})"
    return value, None


def ground_truth(
    value: Any, schema: ModelSchema
) -> tuple[tuple[str | None, float | None], str | None]:
    """(label_class, label_value) for storage, or a problem."""
    if schema.classes is None:
        f, problem = _as_float(value)
        return (None, f), problem
    c, problem = _class_label(value, schema.classes)
    return (c, None), problem


def _check_unknown(record: dict[str, Any], allowed: frozenset[str], index: int, prefix: str,
                   out: list[Problem]) -> None:
    for key in record.keys() - allowed:
        out.append(Problem("unknown field", field=f"{prefix}{key}"[:MAX_STRING_LEN], index=index))


def records_of(body: Any, max_records: int, marks: frozenset[str] = frozenset()
               ) -> list[Any]:
    """The ``records`` list of a batch body (besides which it may hold ``marks``: MARK for
    a prediction batch); TooLarge past the per-batch limit, before validation."""
    if not isinstance(body, dict):
        raise Invalid("validation_error", "the body must be an object {\"records\": [...]}",
                      [Problem(f"got {_describe(body)}", field="body")])
    problems = [Problem("unknown field", field=str(k)[:MAX_STRING_LEN])
                for k in body.keys() - {"records", *marks}]
    records = body.get("records")
    if not isinstance(records, list):
        problems.append(Problem(f"must be an array, got {_describe(records)}", field="records"))
    if problems:
        raise Invalid("validation_error", "the batch is malformed; nothing was stored", problems)
    if len(records) > max_records:
        raise TooLarge(
            "too_many_records",
            f"a batch holds at most {max_records} records; this one has {len(records)}: "
            "split it into smaller batches",
            [Problem(f"limit is {max_records} records", field="records")],
        )
    return records


def referenced_models(records: list[Any]) -> set[str]:
    """Model names to look up; a name no database could store is simply unknown."""
    return {r["model"] for r in records if isinstance(r, dict) and isinstance(r.get("model"), str)
            and text_problem(r["model"]) is None}


def check_known(records: list[Any], schemas: dict[str, ModelSchema], *, with_version: bool) -> None:
    """NotFound naming every record whose model (or version) is not registered."""
    problems: list[Problem] = []
    for i, rec in enumerate(records):
        if not isinstance(rec, dict) or not isinstance(rec.get("model"), str):
            continue  # reported as a validation problem
        schema = schemas.get(rec["model"])
        if schema is None:
            problems.append(Problem("unknown model; register it with POST /v1/models",
                                    field="model", index=i))
        elif with_version and isinstance(rec.get("version"), str) \
                and rec["version"] not in schema.versions:
            problems.append(Problem(
                "unknown version; register it with POST /v1/models/{model}/versions",
                field="version", index=i))
    if problems:
        what = "model or version" if with_version else "model"
        raise NotFound("unknown_model", f"the batch names an unknown {what}; "
                       "nothing was stored", problems)


def _record_head(rec: Any, i: int, allowed: frozenset[str], schemas: dict[str, ModelSchema],
                 limits: Limits, problems: list[Problem]
                 ) -> tuple[ModelSchema, str | None, datetime | None] | None:
    """The checks every record shares: an object, no unknown fields, a known model, a
    prediction_id and a timestamp. None when the record cannot be checked further."""
    if not isinstance(rec, dict):
        problems.append(Problem(f"must be an object, got {_describe(rec)}", index=i))
        return None
    _check_unknown(rec, allowed, i, "", problems)
    schema = schemas.get(rec.get("model")) if isinstance(rec.get("model"), str) else None
    if schema is None:
        problems.append(Problem("required string", field="model", index=i))
        return None
    pid, p = _short_string(rec.get("prediction_id"))
    if p:
        problems.append(Problem(p, field="prediction_id", index=i))
    ts, p = parse_timestamp(rec.get("timestamp"), limits)
    if p:
        problems.append(Problem(p, field="timestamp", index=i))
    return schema, pid, ts


def _refuse_if_any(problems: list[Problem], n_records: int) -> None:
    if problems:
        bad = len({p.index for p in problems})
        raise Invalid(
            "validation_error",
            f"{bad} of {n_records} records are invalid; nothing was stored. "
            "Fix the fields listed in details and resend the whole batch.",
            problems,
        )


class ValidatedPredictions(NamedTuple):
    rows: list[PredictionRow]  # to store: the first occurrence of each (model, prediction_id)
    repeats: int  # in-batch repeats, which count as duplicates
    parsed: list[Parsed]  # each row's parsed values, in the order of ``rows``


def validate_predictions(records: list[Any], schemas: dict[str, ModelSchema], limits: Limits,
                         summarized: bool = False) -> ValidatedPredictions:
    """The batch's rows, or Invalid listing every problem of every record; ``summarized``:
    a batch of thin rows (app/ingest/thin.py)."""
    problems: list[Problem] = []
    rows: list[PredictionRow] = []
    parsed: list[Parsed] = []
    seen: set[tuple[int, str]] = set()
    repeats = 0
    received_at = limits.now
    for i, rec in enumerate(records):
        n_before = len(problems)
        head = _record_head(rec, i, PREDICTION_FIELDS, schemas, limits, problems)
        if head is None:
            continue
        schema, pid, ts = head
        version_id = schema.versions.get(rec.get("version")) \
            if isinstance(rec.get("version"), str) else None
        if version_id is None:
            problems.append(Problem("required string", field="version", index=i))

        record_problems(rec, summarized, i, problems)
        features, unexpected = ({}, {}) if summarized else _validate_features(
            rec.get("features", {}), schema.types_of(version_id),
            schema.records_unknown(limits), i, problems, schema.dims)
        cohorts = _validate_cohorts(rec.get("cohorts", {}), schema, i, problems)
        payload = _validate_prediction(rec.get("prediction"), schema, limits, i, problems)

        gt: tuple[str | None, float | None] = (None, None)
        if rec.get("label") is not None:
            gt, p = ground_truth(rec["label"], schema)
            if p:
                problems.append(Problem(p, field="label", index=i))
        latency = None
        if rec.get("latency_ms") is not None:
            latency, p = _as_float(rec["latency_ms"])
            if p is None and not 0 <= latency <= MAX_LATENCY_MS:
                p = f"must be between 0 and {MAX_LATENCY_MS:.0f} milliseconds (one hour)"
            if p:
                problems.append(Problem(p, field="latency_ms", index=i))

        if len(problems) > n_before:
            continue
        key = (schema.row.id, pid)
        if key in seen:
            repeats += 1
            continue
        seen.add(key)
        score, value, probabilities, predicted = payload
        label_class, label_value = gt
        rows.append(PredictionRow(
            schema.row.id, ts, pid, version_id, received_at, THIN_FEATURES if summarized
            else _to_json({**features, **unexpected} if unexpected else features),
            _to_json(cohorts), score, value,
            None if probabilities is None else _to_json(probabilities),
            predicted, latency, label_class, label_value))
        parsed.append(Parsed(features, cohorts, probabilities, len(unexpected)))
    _refuse_if_any(problems, len(records))
    return ValidatedPredictions(rows, repeats, parsed)


def _unexpected(name: str, v: Any, where: str, i: int, problems: list[Problem],
                out: dict[str, Any]) -> None:
    """An undeclared feature under the ``record`` policy: kept when it is a name that could be
    declared and a scalar value a declared feature could hold."""
    # A recorded undeclared feature must be a name it can be declared under later.
    bad = feature_name_problem(name)
    if bad is not None:
        problems.append(Problem(
            f"not a feature of this model's schema, and not a name a feature can be declared "
            f"under ({bad}; any printable text of 1 to {MAX_FEATURE_NAME} characters), so it "
            "cannot be recorded", field=where, index=i))
        return
    if v is None:
        return
    if isinstance(v, str):
        s, p = _short_string(v, "a string")
        if p:
            problems.append(Problem(f"undeclared feature {p}", field=where, index=i))
        out[name] = s
        return
    f, p = _as_float(v)
    if p:
        problems.append(Problem(
            f"undeclared feature {p}" if isinstance(v, NonFinite) else
            f"undeclared feature must be a number or a string, got {_describe(v)}",
            field=where, index=i))
    out[name] = f


def _validate_features(raw: Any, types: dict[str, str], record_unknown: bool, i: int,
                       problems: list[Problem], dims: dict[str, int]
                       ) -> tuple[dict[str, Any], dict[str, Any]]:
    """The declared features' values (``types``: the record's version's, ``dims`` its
    embeddings' lengths), the undeclared ones kept under the ``record`` policy."""
    unexpected: dict[str, Any] = {}
    if not isinstance(raw, dict):
        problems.append(Problem(f"must be an object, got {_describe(raw)}", field="features",
                                index=i))
        return {}, unexpected
    out: dict[str, Any] = {}
    for name, v in raw.items():
        kind = types.get(name)
        where = f"features.{name}"[:MAX_STRING_LEN]
        if kind is None:
            if record_unknown:
                _unexpected(name, v, where, i, problems, unexpected)
            else:
                close = difflib.get_close_matches(name, list(types), n=1, cutoff=0.75)
                hint = f"; did you mean {close[0]!r}?" if close else ""
                problems.append(Problem("not a feature of this model's schema (or of this "
                                        f"version's own feature list){hint}", field=where,
                                        index=i))
            continue
        if v is None:
            continue  # stored like an absent feature
        if kind == "numeric":
            if type(v) is float:
                out[name] = v
                continue
            f, p = _as_float(v)
            if p:
                problems.append(Problem(f"numeric feature {p}", field=where, index=i))
            out[name] = f
        elif kind == "embedding":
            vec, p = _vector(v, dims.get(name, 0))
            if p:
                problems.append(Problem(f"embedding feature {p}", field=where, index=i))
            out[name] = vec
        else:
            s, p = _short_string(_text(v), "a string (categorical)")
            if p:
                problems.append(Problem(f"categorical feature {p}", field=where, index=i))
            out[name] = s
    return out, unexpected


def _validate_cohorts(raw: Any, schema: ModelSchema, i: int,
                      problems: list[Problem]) -> dict[str, str]:
    if not isinstance(raw, dict):
        problems.append(Problem(f"must be an object, got {_describe(raw)}", field="cohorts",
                                index=i))
        return {}
    out: dict[str, str] = {}
    for key, v in raw.items():
        where = f"cohorts.{key}"[:MAX_STRING_LEN]
        if key not in schema.cohort_keys:
            problems.append(Problem("not a cohort key of this model", field=where, index=i))
            continue
        if v is None:
            continue
        s, p = _short_string(_text(v))
        if p:
            problems.append(Problem(p, field=where, index=i))
        else:
            out[key] = s  # type: ignore[assignment]
    return out


def _validate_prediction(
    raw: Any, schema: ModelSchema, limits: Limits, i: int, problems: list[Problem]
) -> tuple[float | None, float | None, dict[str, float] | None, str | None]:
    task = schema.row.task
    required, allowed = PAYLOAD_FIELDS[task]
    if not isinstance(raw, dict):
        shape = {"binary_classification": '{"score": 0.93}', "regression": '{"value": 12.5}',
                 "multiclass_classification": '{"probabilities": {"<class>": 0.7, ...}}'}[task]
        problems.append(Problem(f"required object, got {_describe(raw)}; for a {task} model "
                                f"send e.g. {shape}", field="prediction", index=i))
        return None, None, None, None
    _check_unknown(raw, allowed, i, "prediction.", problems)
    score = value = None
    probabilities: dict[str, float] | None = None
    predicted = None
    if required not in raw:
        problems.append(Problem(f"required for {task}", field=f"prediction.{required}", index=i))
    elif task == "binary_classification":
        score, p = _as_float(raw["score"])
        if p is None and not 0.0 <= score <= 1.0:
            p = "probability must be within [0, 1]"
        if p:
            problems.append(Problem(p, field="prediction.score", index=i))
    elif task == "regression":
        value, p = _as_float(raw["value"])
        if p:
            problems.append(Problem(p, field="prediction.value", index=i))
    else:
        probabilities = _validate_probabilities(raw["probabilities"], schema, limits, i, problems)
    if raw.get("label") is not None:
        if schema.classes is not None:
            predicted, p = _class_label(raw["label"], schema.classes)
        else:
            predicted, p = _short_string(_text(raw["label"]))
        if p:
            problems.append(Problem(p, field="prediction.label", index=i))
    return score, value, probabilities, predicted


def _validate_probabilities(raw: Any, schema: ModelSchema, limits: Limits, i: int,
                            problems: list[Problem]) -> dict[str, float] | None:
    if not isinstance(raw, dict) or not raw:
        problems.append(Problem("must be a non-empty object {class: probability}",
                                field="prediction.probabilities", index=i))
        return None
    assert schema.classes is not None
    out: dict[str, float] = {}
    ok = True
    for cls, v in raw.items():
        where = f"prediction.probabilities.{cls}"[:MAX_STRING_LEN]
        if cls not in schema.classes:
            problems.append(Problem("not one of the model's classes", field=where, index=i))
            ok = False
            continue
        f, p = _as_float(v)
        if p is None and not 0.0 <= f <= 1.0:
            p = "probability must be within [0, 1]"
        if p:
            problems.append(Problem(p, field=where, index=i))
            ok = False
            continue
        out[cls] = f
    if ok:
        total = math.fsum(out.values())
        if abs(total - 1.0) > limits.sum_tolerance:
            problems.append(Problem(
                f"probabilities must sum to 1 within {limits.sum_tolerance:g} "
                f"(they sum to {total:.6f}); classes left out count as 0",
                field="prediction.probabilities", index=i))
            ok = False
    return out if ok else None


def validate_labels(
    records: list[Any], schemas: dict[str, ModelSchema], limits: Limits
) -> tuple[list[LabelRow], int]:
    """Label rows and in-batch repeats (duplicates), or Invalid listing every problem."""
    problems: list[Problem] = []
    rows: list[LabelRow] = []
    seen: set[tuple[int, str]] = set()
    repeats = 0
    for i, rec in enumerate(records):
        n_before = len(problems)
        head = _record_head(rec, i, LABEL_FIELDS, schemas, limits, problems)
        if head is None:
            continue
        schema, pid, ts = head
        if rec.get("label") is None:
            problems.append(Problem("required", field="label", index=i))
            gt: tuple[str | None, float | None] = (None, None)
        else:
            gt, p = ground_truth(rec["label"], schema)
            if p:
                problems.append(Problem(p, field="label", index=i))
        if len(problems) > n_before:
            continue
        key = (schema.row.id, pid)
        if key in seen:
            repeats += 1
            continue
        seen.add(key)
        label_class, label_value = gt
        rows.append(LabelRow(schema.row.id, pid, label_class, label_value, ts))
    _refuse_if_any(problems, len(records))
    return rows, repeats
