"""What an ingest call did, per model: returned to the caller (the HTTP layer), which hands it
to the service metrics. Ingest counts nothing itself, so that it depends on no metrics code;
the counts are computed here, on any thread and before the batch commits (the prediction
path computes them while its rows are copied in), and counted by the caller once the batch
has committed.

A refused batch raises ``Refused``: the domain error to answer with, and what to count of
the refusal.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

from app.errors import DomainError, Problem
from app.ingest.rows import PredictionRow
from app.ingest.schema import ModelSchema
from app.ingest.writer import LabelResult


class SentPredictions(NamedTuple):
    """A model's records in a stored prediction batch."""

    model: str
    accepted: int
    duplicates: int  # stored already, or repeated in the batch


class Latencies(NamedTuple):
    """The logged inference latencies of a version's stored predictions."""

    model: str
    version: str
    seconds: list[float]


@dataclass(frozen=True)
class PredictionsStored:
    """A stored prediction batch: the response's figures and what to count of it."""

    accepted: int
    duplicates: int
    sent: list[SentPredictions]  # one per model the batch names
    undeclared: list[tuple[str, int]]  # (model, values of undeclared features stored)
    latencies: list[Latencies]


class SentLabels(NamedTuple):
    """A model's records in a stored label batch."""

    model: str
    matched: int  # joined a stored prediction
    pending: int  # waiting for their prediction
    duplicates: int


@dataclass(frozen=True)
class LabelsStored:
    matched: int
    pending: int
    duplicates: int
    sent: list[SentLabels]


@dataclass(frozen=True)
class Rejected:
    """A refused batch's records by model (None: not a registered model's), and for
    predictions the refused feature values by model and feature (None: a feature the model
    does not declare)."""

    kind: str  # "predictions" or "labels"
    records: dict[str | None, int]
    values: dict[tuple[str, str | None], int]


class Refused(Exception):
    """A batch refused with ``error``; ``rejected`` is what to count of it."""

    def __init__(self, error: DomainError, rejected: Rejected) -> None:
        super().__init__(error.message)
        self.error = error
        self.rejected = rejected


def rejected(records: list[Any], kind: str, known: Mapping[str, ModelSchema],
             problems: Iterable[Problem] = ()) -> Rejected:
    """What to count of a refused batch: a feature named in a problem counts under its
    model and, when no version of the model declares it, under None, so that the metric's
    label stays bounded by the registered schemas."""
    model_of = [r["model"] if isinstance(r, dict) and isinstance(r.get("model"), str)
                and r["model"] in known else None for r in records]
    values: Counter[tuple[str, str | None]] = Counter()
    for p in problems if kind == "predictions" else ():
        if p.index is None or not 0 <= p.index < len(records) or not (
                p.field or "").startswith("features."):
            continue
        model = model_of[p.index]
        if model is not None:
            feature = p.field.removeprefix("features.")
            values[(model, feature if known[model].declares(feature) else None)] += 1
    return Rejected(kind, dict(Counter(model_of)), dict(values))


def predictions_stored(by_id: Mapping[int, ModelSchema], sent_models: list[str],
                       new_rows: list[PredictionRow],
                       undeclared: Mapping[tuple[int, str], int]) -> PredictionsStored:
    """The outcome of a batch whose ``new_rows`` were stored (of one record per entry of
    ``sent_models``); ``undeclared`` counts per stored key the undeclared feature values it
    carried (only the complete validator's rows can carry any). One pass over the rows, by
    model id: names are looked up per model, not per row."""
    accepted_ids: Counter[int] = Counter()
    undeclared_ids: Counter[int] = Counter()
    seconds: dict[tuple[int, int], list[float]] = {}
    for r in new_rows:
        accepted_ids[r.model_id] += 1
        if undeclared and r.key in undeclared:
            undeclared_ids[r.model_id] += undeclared[r.key]
        if r.latency_ms is not None:
            seconds.setdefault((r.model_id, r.version_id), []).append(r.latency_ms / 1000.0)
    accepted = Counter({by_id[mid].row.name: n for mid, n in accepted_ids.items()})
    version_names = {(mid, vid): v for mid, s in by_id.items() for v, vid in s.versions.items()}
    return PredictionsStored(
        len(new_rows), len(sent_models) - len(new_rows),
        [SentPredictions(name, accepted[name], n - accepted[name])
         for name, n in Counter(sent_models).items()],
        [(by_id[mid].row.name, n) for mid, n in undeclared_ids.items()],
        [Latencies(by_id[mid].row.name, version_names[(mid, vid)], values)
         for (mid, vid), values in seconds.items()])


def labels_stored(by_id: Mapping[int, ModelSchema], records: list[Any],
                  result: LabelResult) -> LabelsStored:
    """The outcome of a stored label batch, per model it names."""
    names = {mid: s.row.name for mid, s in by_id.items()}
    sent = Counter(r["model"] for r in records)
    matched = Counter(names[m] for m, _ in result.matched_keys)
    new = Counter(names[r.model_id] for r in result.new_labels)
    return LabelsStored(result.matched, result.pending, result.duplicates, [
        SentLabels(name, matched[name], new[name] - matched[name], n - new[name])
        for name, n in sent.items()])
