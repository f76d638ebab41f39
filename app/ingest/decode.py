"""The typed fast path for prediction batches: decode and check a valid batch at C speed.

Two msgspec passes over the body: a skimming one that reads only each record's model and
version (to load their schemas), then one typed decode of the whole batch into structs built
from the registered schemas (one record struct per model, told apart by the ``model`` field
as a tag): numbers, strings, unknown fields and features, cohort keys, ranges and string
lengths are all checked while parsing. What is left per record is a handful of lookups (the
version, the timestamp, a repeat), and the columns the summaries need are built from the
structs in bulk. The fast path only ever accepts: at the first
thing it does not accept (a bad record, a NaN, a class the model does not have, a
timestamp format it does not know), it steps aside and the complete validator in
validation.py reads the batch, so every refusal keeps its exact 422 (or 404, 413) naming each
bad record and field, and everything the fast path accepts the complete validator accepts
with the same values (tests/ingest/test_ingest_decode.py holds them equal).
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Annotated, Any, Union

import msgspec
import numpy as np
from msgspec import Meta, Struct
from msgspec.structs import astuple

from app.evaluation.summaries import ModelShape, Rows, label_numbers
from app.ingest.rows import LabelRow, PredictionRow
from app.ingest.schema import Limits, ModelSchema
from app.ingest.summarize import ModelColumns
from app.ingest.validation import MAX_ID_LEN, MAX_LATENCY_MS, MAX_STRING_LEN

ShortStr = Annotated[str, Meta(min_length=1, max_length=MAX_STRING_LEN)]
Probability = Annotated[float, Meta(ge=0.0, le=1.0)]
# Escapes the database cannot store (NUL, lone UTF-16 surrogates) anywhere in the body send the
# batch to the complete validator, which names the field. A false alarm (an escaped backslash
# before such text) only costs the slow path.
_UNSTORABLE = re.compile(rb"\\u(?:0000|[dD][89a-fA-F][0-9a-fA-F]{2})")


class NotFast(Exception):
    """The batch needs the complete validator."""



class _Skim(Struct, gc=False):
    """What the first pass reads of a record; every other field is skipped unread."""

    model: str
    version: str | None = None


class _SkimBatch(Struct, gc=False):
    records: list[_Skim]


_skim = msgspec.json.Decoder(_SkimBatch)


# Integer labels are taken as their decimal string (docs/ingest.md), as the complete
# validator takes them.
class _Binary(Struct, forbid_unknown_fields=True, gc=False):
    score: Probability
    label: str | int | None = None


class _Regression(Struct, forbid_unknown_fields=True, gc=False):
    value: float
    label: ShortStr | int | None = None


class _Multiclass(Struct, forbid_unknown_fields=True, gc=False):
    probabilities: dict[str, Probability]
    label: str | int | None = None


_PAYLOAD = {"binary_classification": _Binary, "regression": _Regression,
            "multiclass_classification": _Multiclass}
_encode = msgspec.json.Encoder().encode


class ModelDecoders:
    """The record struct of one model, built from its registered schema: numeric features
    first, then categorical ones, so a record's numeric values are one slice of its tuple."""

    def __init__(self, schema: ModelSchema) -> None:
        self.schema = schema
        kinds = schema.feature_types
        if schema.dims:  # a vector's length and elements: the complete validator checks them
            raise NotFast
        self.numeric = [n for n, k in kinds.items() if k == "numeric"]
        self.categorical = [n for n, k in kinds.items() if k != "numeric"]
        # Absent and null are the same thing (omitted when stored, None when read back).
        # Fields are f0, f1, ... renamed to the names on the wire: a feature name is any
        # printable text (`mean radius`), not a Python identifier.
        names = self.numeric + self.categorical
        features = msgspec.defstruct(
            "Features", [(f"f{j}", float | None, None) for j in range(len(self.numeric))]
            + [(f"f{j}", ShortStr | None, None) for j in range(len(self.numeric), len(names))],
            rename={f"f{j}": n for j, n in enumerate(names)},
            forbid_unknown_fields=True, omit_defaults=True, gc=False)
        self.cohort_keys = sorted(schema.cohort_keys)
        cohorts = msgspec.defstruct("Cohorts", [(f"c{j}", ShortStr | None, None)
                                                for j in range(len(self.cohort_keys))],
                                    rename={f"c{j}": k for j, k in enumerate(self.cohort_keys)},
                                    forbid_unknown_fields=True, omit_defaults=True, gc=False)
        self.record = msgspec.defstruct("Record", [
            ("prediction_id", Annotated[str, Meta(min_length=1, max_length=MAX_ID_LEN)]),
            ("timestamp", str),
            ("prediction", _PAYLOAD[schema.row.task]),
            # Required: a record without it goes to the complete validator, which refuses
            # it (a prediction summarised elsewhere is a thin row, app/ingest/thin.py).
            ("features", features),
            ("version", str | None, None),
            ("cohorts", cohorts, msgspec.field(default_factory=cohorts)),
            ("label", str | int | float | None, None),
            ("latency_ms", Annotated[float, Meta(ge=0.0, le=MAX_LATENCY_MS)] | None, None),
        ], tag_field="model", tag=schema.row.name, forbid_unknown_fields=True, gc=False)


def _batch_decoder(decoders: list[ModelDecoders]) -> msgspec.json.Decoder:
    record = decoders[0].record if len(decoders) == 1 else \
        Union[tuple(d.record for d in decoders)]  # noqa: UP007 - built at run time
    return msgspec.json.Decoder(msgspec.defstruct(
        "Batch", [("records", list[record])], forbid_unknown_fields=True, gc=False))


def _finite(value: int | float) -> float:
    try:
        return float(value)
    except OverflowError:  # an integer past the float range
        raise NotFast from None


def _timestamp(value: str, earliest: datetime, latest: datetime) -> datetime:
    ts = datetime.fromisoformat(value)  # the complete validator's parser, so the same formats
    try:
        ts = ts.replace(tzinfo=UTC) if ts.tzinfo is None else ts.astimezone(UTC)
    except OverflowError:  # past the calendar in UTC: the complete validator names it
        raise NotFast from None
    if ts > latest or ts < earliest:
        raise NotFast
    return ts


@dataclass
class Decoded:
    names: list[str]  # each record's model
    schemas: dict[str, ModelSchema]
    rows: list[PredictionRow]  # to store: the first occurrence of each key
    repeats: int  # in-batch repeats of a (model, prediction_id)
    # per model: its decoders, schema, stored records, their times and positions in rows
    kept: list[tuple[ModelDecoders, ModelSchema, list[Any], list[datetime], list[int]]]
    _columns: dict[int, ModelColumns] | None = field(default=None, repr=False)

    @property
    def columns(self) -> dict[int, ModelColumns]:
        """Per model id: its rows as the summaries' columns. Built at first use, so that
        the ingest path builds them while the rows are copied in (service.Ahead); two
        threads asking at once may both build them, alike (no lock held while building)."""
        if self._columns is None:
            self._columns = {schema.row.id: ModelColumns(
                np.asarray(positions, dtype=np.int64),
                _columns(dec, schema, records, times, [self.rows[i] for i in positions]))
                for dec, schema, records, times, positions in self.kept}
        return self._columns


def _cached(cache: dict[Any, Any], key: Any, build: Callable[[], Any]) -> Any:
    """The cached object, built once: when two threads build it at once, the first stored is
    the one both use (``setdefault`` is atomic), never one each."""
    hit = cache.get(key)
    if hit is None:
        if len(cache) > 1000:
            cache.clear()
        hit = cache.setdefault(key, build())
    return hit


def decode_predictions(
    body: bytes, schemas_of: Callable[[set[tuple[str, str | None]]], dict[str, ModelSchema]],
    limits: Limits,
    max_records: int, cache: dict[Any, Any] | None = None,
) -> Decoded:
    """A valid batch, decoded; NotFast when anything needs the complete validator's
    judgement."""
    if _UNSTORABLE.search(body):
        raise NotFast
    cache = {} if cache is None else cache
    try:
        last = cache.get(_LAST)
        if last is not None:  # the models of the last batch: most batches name the same
            hit = _decode_as(last, body, schemas_of, limits, max_records)
            if hit is not None:
                return hit
        skim = _skim.decode(body).records
        if len(skim) > max_records:
            raise NotFast
        names = [r.model for r in skim]
        schemas = schemas_of({(r.model, r.version) for r in skim})
        if not names or not set(names) <= schemas.keys():
            raise NotFast
        models = sorted(set(names))
        decoders = [_cached(cache, schemas[m].key, lambda m=m: ModelDecoders(schemas[m]))
                    for m in models]
        # keyed by the decoders themselves: a batch decoder always makes the record types
        # these decoders look records up by
        batch = _cached(cache, tuple(d.record for d in decoders),
                        lambda: _batch_decoder(decoders))
        cache[_LAST] = (batch, decoders)
        records = batch.decode(body).records
        # A cached decoder depends only on schema.key; versions and classes are read from
        # the schemas just loaded (a version registered a moment ago is known at once).
        kinds = {d.record: (d, schemas[m]) for d, m in zip(decoders, models, strict=True)}
        return _rows(records, kinds, names, schemas, limits)
    except (msgspec.DecodeError, msgspec.ValidationError, ValueError, RecursionError):
        raise NotFast from None


_LAST = "last batch decoder"


def _decode_as(last: tuple[msgspec.json.Decoder, list[ModelDecoders]], body: bytes,
               schemas_of: Callable[[set[tuple[str, str | None]]], dict[str, ModelSchema]],
               limits: Limits, max_records: int) -> Decoded | None:
    """The batch decoded with the last batch's decoder, without the skimming pass; None
    when it does not fit (other models, or a schema changed since): then the batch takes the
    usual way. Raises what the usual way would raise on a batch it decodes."""
    batch, decoders = last
    try:
        records = batch.decode(body).records
    except (msgspec.DecodeError, msgspec.ValidationError):
        return None
    if not records:  # the usual way's judgement (an empty batch is the validator's)
        return None
    if len(records) > max_records:
        raise NotFast
    name_of = {d.record: d.schema.row.name for d in decoders}
    names = [name_of[type(r)] for r in records]
    schemas = schemas_of({(n, r.version) for n, r in zip(names, records, strict=True)})
    kinds = {}
    present = set(names)
    for d in decoders:
        if d.schema.row.name not in present:
            continue
        schema = schemas.get(d.schema.row.name)
        if schema is None or schema.key != d.schema.key:
            return None
        kinds[d.record] = (d, schema)
    return _rows(records, kinds, names, schemas, limits)


# A row made from the tuple of its fields: one copy of the pointers, in C, where calling
# PredictionRow(...) would bind 14 arguments in Python (3x the cost on this hot loop).
_row = functools.partial(tuple.__new__, PredictionRow)


def _rows(records: list[Any], decoders: dict[type, tuple[ModelDecoders, ModelSchema]],
          names: list[str], schemas: dict[str, ModelSchema], limits: Limits) -> Decoded:
    rows: list[PredictionRow] = []
    seen: set[tuple[int, str]] = set()
    kept: dict[type, list[Any]] = {}  # each model's stored records, in batch order
    positions: dict[type, list[int]] = {}
    times: dict[type, list[datetime]] = {}
    received_at = limits.now
    earliest, latest = limits.now - limits.max_past, limits.now + limits.max_future
    for r in records:
        kind = type(r)
        schema = decoders[kind][1]
        version_id = schema.versions.get(r.version) if r.version is not None else None
        if version_id is None or version_id in schema.version_features:
            raise NotFast  # a version with its own feature list: the complete validator's
        ts = _timestamp(r.timestamp, earliest, latest)
        key = (schema.row.id, r.prediction_id)
        if key in seen:
            continue
        seen.add(key)
        score, value, probs_json, predicted = _payload(r.prediction, schema.classes, limits)
        gt_class, gt_value = _ground_truth(r.label, schema.classes)
        if kind not in kept:
            kept[kind], positions[kind], times[kind] = [], [], []
        kept[kind].append(r)
        positions[kind].append(len(rows))
        times[kind].append(ts)
        rows.append(_row((schema.row.id, ts, r.prediction_id, version_id, received_at,
                          _encode(r.features).decode(), _encode(r.cohorts).decode(), score,
                          value, probs_json, predicted, r.latency_ms, gt_class, gt_value)))
    return Decoded(names, schemas, rows, len(records) - len(rows),
                   [(*decoders[kind], rs, times[kind], positions[kind])
                    for kind, rs in kept.items()])


def _payload(p: Any, classes: frozenset[str] | None, limits: Limits
             ) -> tuple[float | None, float | None, str | None, str | None]:
    """(score, value, probabilities as JSON, predicted label) of a prediction payload."""
    score = value = probs_json = None
    if type(p) is _Binary:
        score = p.score
    elif type(p) is _Regression:
        value = p.value
    else:
        probabilities = p.probabilities
        if not probabilities or not probabilities.keys() <= classes or abs(
                math.fsum(probabilities.values()) - 1.0) > limits.sum_tolerance:
            raise NotFast
        probs_json = _encode(probabilities).decode()
    predicted = p.label
    if type(predicted) is int:
        predicted = str(predicted)
        if len(predicted) > MAX_STRING_LEN:
            raise NotFast
    if predicted is not None and classes is not None and predicted not in classes:
        raise NotFast
    return score, value, probs_json, predicted


def _ground_truth(label: Any, classes: frozenset[str] | None
                  ) -> tuple[str | None, float | None]:
    """(label_class, label_value) of an inline label."""
    if label is None:
        return None, None
    if classes is None:
        if type(label) is str:
            raise NotFast
        return None, _finite(label)
    if type(label) is int:
        label = str(label)
    if type(label) is not str or label not in classes:
        raise NotFast
    return label, None


def _columns(dec: ModelDecoders, schema: ModelSchema, records: list[Any],
             times: list[datetime], rows: list[PredictionRow]) -> Rows:
    """One model's records as the summaries' columns, built in bulk from the structs."""
    n, k = len(records), len(dec.numeric)
    ts = np.array([t.timestamp() for t in times], dtype=np.float64)
    out = Rows(version_id=np.array([r.version_id for r in rows], dtype=np.int64), ts=ts)
    feats = [astuple(r.features) for r in records]
    if k:
        table = np.array([f[:k] for f in feats], dtype=np.float64).reshape(n, k)
        for j, name in enumerate(dec.numeric):
            out.features[name] = table[:, j]
    for j, name in enumerate(dec.categorical, start=k):
        out.features[name] = np.array([f[j] for f in feats], dtype=object)
    if dec.cohort_keys:
        cohorts = [astuple(r.cohorts) for r in records]
        for j, key in enumerate(dec.cohort_keys):
            out.cohorts[key] = np.array([c[j] for c in cohorts], dtype=object)
    task = schema.row.task
    if task == "binary_classification":
        out.score = np.array([r.prediction.score for r in records], dtype=np.float64)
    elif task == "regression":
        out.value = np.array([r.prediction.value for r in records], dtype=np.float64)
    else:
        classes = schema.row.classes
        out.probabilities = np.array(
            [[r.prediction.probabilities.get(c, 0.0) for c in classes] for r in records],
            dtype=np.float64).reshape(n, len(classes))
    # An inline label is stored with the prediction's time: a delay of zero.
    out.label = label_numbers(ModelShape.of(schema.row), [r.gt_class for r in rows],
                              [r.gt_value for r in rows])
    out.label_delay = np.where(np.isnan(out.label), np.nan, 0.0)
    return out


# --------------------------------------------------------------------------- labels


class _Label(Struct, forbid_unknown_fields=True, gc=False):
    model: str
    prediction_id: Annotated[str, Meta(min_length=1, max_length=MAX_ID_LEN)]
    label: str | int | float
    timestamp: str


_labels = msgspec.json.Decoder(msgspec.defstruct(
    "LabelBatch", [("records", list[_Label])], forbid_unknown_fields=True, gc=False))


@dataclass
class DecodedLabels:
    names: list[str]
    ids: list[str]  # each record's prediction_id
    schemas: dict[str, ModelSchema]
    rows: list[LabelRow]
    repeats: int  # records repeating an earlier one of the batch (model, prediction_id)


def decode_labels(body: bytes,
                  schemas_of: Callable[[set[tuple[str, str | None]]], dict[str, ModelSchema]],
                  limits: Limits, max_records: int) -> DecodedLabels:
    """A valid label batch, decoded in one typed pass; NotFast when anything needs the
    complete validator's judgement (which then names every problem)."""
    if _UNSTORABLE.search(body):
        raise NotFast
    try:
        records = _labels.decode(body).records
    except (msgspec.DecodeError, msgspec.ValidationError, ValueError, RecursionError):
        raise NotFast from None
    if not records or len(records) > max_records:
        raise NotFast
    names = [r.model for r in records]
    schemas = schemas_of({(n, None) for n in set(names)})
    if not set(names) <= schemas.keys():
        raise NotFast
    earliest, latest = limits.now - limits.max_past, limits.now + limits.max_future
    rows: list[LabelRow] = []
    seen: set[tuple[int, str]] = set()
    try:
        for r in records:
            schema = schemas[r.model]
            ts = _timestamp(r.timestamp, earliest, latest)
            gt_class, gt_value = _ground_truth(r.label, schema.classes)
            key = (schema.row.id, r.prediction_id)
            if key not in seen:
                seen.add(key)
                rows.append(LabelRow(schema.row.id, r.prediction_id, gt_class, gt_value, ts))
    except ValueError:  # a timestamp the parser refuses: the validator names it
        raise NotFast from None
    return DecodedLabels(names, [r.prediction_id for r in records], schemas, rows,
                         len(records) - len(rows))
