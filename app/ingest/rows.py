"""The rows passed between validation, the writer, the summaries, the SLO counters and the
ingest outcome, by name.

Each is a NamedTuple: a plain tuple underneath, so COPY writes a row as it is and building one
costs what building the tuple costs (the fast path makes them with ``tuple.__new__``).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, NamedTuple


class PredictionRow(NamedTuple):
    """One validated prediction, in the column order of the writer's staging table
    (storage/tables.py STAGE_TYPES): the ``predictions`` table's columns, then the inline
    label, which goes to ``labels``. JSON columns hold their text, as COPY sends it."""

    model_id: int
    ts: datetime  # UTC
    prediction_id: str
    version_id: int
    received_at: datetime
    features: str
    cohorts: str
    score: float | None
    value: float | None
    probabilities: str | None
    predicted_label: str | None
    latency_ms: float | None
    gt_class: str | None  # the inline label, classification
    gt_value: float | None  # the inline label, regression

    @property
    def key(self) -> tuple[int, str]:
        """What makes a prediction unique (a repeat is a duplicate)."""
        return self.model_id, self.prediction_id

    @property
    def has_label(self) -> bool:
        return self.gt_class is not None or self.gt_value is not None


# The ``predictions`` table's columns: a PredictionRow's leading fields.
PREDICTION_COLUMNS = PredictionRow._fields[:PredictionRow._fields.index("gt_class")]


class Parsed(NamedTuple):
    """What the complete validator parsed of a PredictionRow's JSON columns, kept beside the
    row so that the summaries need not parse the text again; ``undeclared`` counts the
    features the model does not declare that the record carried (stored, unmonitored)."""

    features: dict[str, Any]
    cohorts: dict[str, Any]
    probabilities: dict[str, float] | None
    undeclared: int


class LabelRow(NamedTuple):
    """One validated label of POST /v1/labels."""

    model_id: int
    prediction_id: str
    label_class: str | None
    label_value: float | None
    ts: datetime


class StoredLabel(NamedTuple):
    """A label stored before its prediction, read back when the prediction is stored."""

    label_class: str | None
    label_value: float | None
    ts: datetime


class CompletedPair(NamedTuple):
    """A stored prediction and the label that just joined it."""

    model_id: int
    prediction_id: str
    version_id: int
    ts: datetime
    cohorts: dict[str, Any]
    score: float | None
    value: float | None
    probabilities: dict[str, float] | None
    label_class: str | None
    label_value: float | None
    label_ts: datetime
