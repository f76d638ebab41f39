"""The typed fast path for prediction batches: decode and check a valid batch at C speed.

msgspec decodes the body straight into typed structs: numbers, strings, unknown fields,
ranges and string lengths are checked while parsing, and each model's features, cohorts and
prediction payload are decoded with a struct built from its registered schema. What is left
per record is a handful of dictionary lookups. The fast path only ever accepts: at the first
thing it does not accept (a bad record, a NaN, an integer where a class name belongs, a
timestamp format it does not know), it steps aside and the complete validator in
validation.py reads the batch, so every refusal keeps its exact 422 (or 404, 413) naming each
bad record and field, and everything the fast path accepts the complete validator accepts
with the same values (tests/ingest/test_ingest_decode.py holds them equal).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Annotated, Any

import msgspec
from msgspec import Meta, Raw, Struct

from app.ingest.validation import (
    MAX_ID_LEN,
    MAX_LATENCY_MS,
    MAX_STRING_LEN,
    Limits,
    ModelSchema,
)

ShortStr = Annotated[str, Meta(min_length=1, max_length=MAX_STRING_LEN)]
Probability = Annotated[float, Meta(ge=0.0, le=1.0)]
# Escapes the database cannot store (NUL, lone UTF-16 surrogates) anywhere in the body send the
# batch to the complete validator, which names the field. A false alarm (an escaped backslash
# before such text) only costs the slow path.
_UNSTORABLE = re.compile(rb"\\u(?:0000|[dD][89a-fA-F][0-9a-fA-F]{2})")


class NotFast(Exception):
    """The batch needs the complete validator."""


_EMPTY = Raw(b"{}")


class _Record(Struct, forbid_unknown_fields=True):
    model: str
    prediction_id: Annotated[str, Meta(min_length=1, max_length=MAX_ID_LEN)]
    timestamp: str
    prediction: Raw
    version: str | None = None
    features: Raw = _EMPTY
    cohorts: Raw = _EMPTY
    label: str | float | None = None
    latency_ms: Annotated[float, Meta(ge=0.0, le=MAX_LATENCY_MS)] | None = None


class _Batch(Struct, forbid_unknown_fields=True):
    records: list[_Record]


_batch = msgspec.json.Decoder(_Batch)


class _Binary(Struct, forbid_unknown_fields=True):
    score: Probability
    label: str | None = None


class _Regression(Struct, forbid_unknown_fields=True):
    value: float
    label: ShortStr | None = None


class _Multiclass(Struct, forbid_unknown_fields=True):
    probabilities: dict[str, Probability]
    label: str | None = None


_PAYLOAD = {"binary_classification": msgspec.json.Decoder(_Binary),
            "regression": msgspec.json.Decoder(_Regression),
            "multiclass_classification": msgspec.json.Decoder(_Multiclass)}


class ModelDecoders:
    """Decoders of one model's features and cohorts, built from its registered schema."""

    def __init__(self, schema: ModelSchema) -> None:
        self.schema = schema
        fields = [(name, (float | None) if kind == "numeric" else (ShortStr | None), None)
                  for name, kind in schema.feature_types.items()]
        self.features = msgspec.json.Decoder(msgspec.defstruct(
            "Features", fields, forbid_unknown_fields=True))
        self.feature_names = list(schema.feature_types)
        cohorts = msgspec.defstruct("Cohorts", [(k, ShortStr | None, None)
                                                for k in sorted(schema.cohort_keys)],
                                    forbid_unknown_fields=True)
        self.cohorts = msgspec.json.Decoder(cohorts)
        self.cohort_keys = sorted(schema.cohort_keys)
        self.payload = _PAYLOAD[schema.row.task]


def _timestamp(value: str, limits: Limits) -> datetime:
    ts = datetime.fromisoformat(value)  # the complete validator's parser, so the same formats
    ts = ts.replace(tzinfo=UTC) if ts.tzinfo is None else ts.astimezone(UTC)
    if ts > limits.now + limits.max_future or ts < limits.now - limits.max_past:
        raise NotFast
    return ts


def _object(raw: Raw) -> str:
    """The client's JSON text of an object, stored as sent (the database normalises it)."""
    return bytes(raw).decode()


def decode_predictions(
    body: bytes, schemas_of: Callable[[set[tuple[str, str | None]]], dict[str, ModelSchema]],
    limits: Limits,
    max_records: int, cache: dict[Any, ModelDecoders] | None = None,
) -> tuple[list[str], dict[str, ModelSchema], list[tuple], int]:
    """(model name per record, schemas, rows to store, in-batch repeats) of a valid batch;
    NotFast when anything needs the complete validator's judgement."""
    if _UNSTORABLE.search(body):
        raise NotFast
    try:
        batch = _batch.decode(body)
    except (msgspec.DecodeError, msgspec.ValidationError, RecursionError):
        raise NotFast from None
    records = batch.records
    if len(records) > max_records:
        raise NotFast
    schemas = schemas_of({(r.model, r.version) for r in records})
    cache = {} if cache is None else cache
    rows: list[tuple] = []
    seen: set[tuple[int, str]] = set()
    repeats = 0
    received_at = limits.now
    try:
        for r in records:
            schema = schemas.get(r.model)
            if schema is None:
                raise NotFast
            dec = cache.get(schema.key)
            if dec is None:
                if len(cache) > 1000:
                    cache.clear()
                dec = cache[schema.key] = ModelDecoders(schema)
            version_id = schema.versions.get(r.version) if r.version is not None else None
            if version_id is None:
                raise NotFast
            ts = _timestamp(r.timestamp, limits)
            features = msgspec.structs.asdict(dec.features.decode(r.features))
            cohorts = msgspec.structs.asdict(dec.cohorts.decode(r.cohorts))
            p = dec.payload.decode(r.prediction)
            score = value = probs_json = probabilities = None
            classes = schema.classes
            if isinstance(p, _Binary):
                score = p.score
            elif isinstance(p, _Regression):
                value = p.value
            else:
                probabilities = p.probabilities
                if not probabilities or not probabilities.keys() <= classes or abs(
                        math.fsum(probabilities.values()) - 1.0) > limits.sum_tolerance:
                    raise NotFast
                probs_json = bytes(msgspec.json.encode(probabilities)).decode()
            predicted = p.label
            if predicted is not None and classes is not None and predicted not in classes:
                raise NotFast
            gt_class = gt_value = None
            if r.label is not None:
                if classes is None:
                    if not isinstance(r.label, float):
                        raise NotFast
                    gt_value = r.label
                elif isinstance(r.label, str) and r.label in classes:
                    gt_class = r.label
                else:
                    raise NotFast
            key = (schema.row.id, r.prediction_id)
            if key in seen:
                repeats += 1
                continue
            seen.add(key)
            rows.append((schema.row.id, ts, r.prediction_id, version_id, received_at,
                         _object(r.features), _object(r.cohorts), score, value, probs_json,
                         predicted, r.latency_ms, gt_class, gt_value,
                         (features, cohorts, probabilities)))
    except (msgspec.DecodeError, msgspec.ValidationError, ValueError, RecursionError):
        raise NotFast from None
    return [r.model for r in records], schemas, rows, repeats
