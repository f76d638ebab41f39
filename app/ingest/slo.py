"""Counting labeled predictions and errors the moment a pair is complete.

A pair (prediction, ground truth) completes when the second of the two is stored: an inline
label, a label for a stored prediction, or a prediction whose label came first. Each
completion adds to the model's row in `slo_counters` inside the same transaction, so the
counters are exact, monotonic and identical on every replica, and the burn-rate windows of
the SLO alerts (down to 5 minutes) follow label arrival. A label and its prediction in
flight together are ordered by the writer's pairing lock, so every pair counts once.
Regression models have no error rate and are not counted.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from app.ingest.rows import CompletedPair, PredictionRow, StoredLabel
from app.ingest.schema import ModelSchema
from app.storage.tables import slo_counters

# (model_id, score, probabilities (dict or JSON text), label_class)
Pair = tuple[int, float | None, Any, str | None]


def is_error(schema: ModelSchema, score: float | None, probabilities: Any,
             label_class: str | None) -> bool | None:
    """Binary: predicted positive at 0.5 vs the label; multiclass: top class vs the label
    (ties to the first class, as in the cohort statistics). None when not countable."""
    classes = schema.row.classes
    if classes is None or label_class is None:
        return None
    if schema.row.task == "binary_classification":
        if score is None or not math.isfinite(score):
            return None
        return (score >= 0.5) != (label_class == classes[1])
    probs = json.loads(probabilities) if isinstance(probabilities, str) else probabilities
    if not probs:
        return None
    top = max(classes, key=lambda c: (probs.get(c, 0.0), -classes.index(c)))
    return top != label_class


def add(conn: Connection, schemas: dict[int, ModelSchema], pairs: Iterable[Pair]) -> None:
    totals: dict[int, list[int]] = {}
    for model_id, score, probabilities, label_class in pairs:
        err = is_error(schemas[model_id], score, probabilities, label_class)
        if err is None:
            continue
        t = totals.setdefault(model_id, [0, 0])
        t[0] += 1
        t[1] += int(err)
    if not totals:
        return
    insert = pg_insert if conn.dialect.name == "postgresql" else sqlite_insert
    now = datetime.now(UTC)
    for model_id, (n, errors) in sorted(totals.items()):
        stmt = insert(slo_counters).values(model_id=model_id, labeled=n, errors=errors,
                                           updated_at=now)
        conn.execute(stmt.on_conflict_do_update(
            index_elements=[slo_counters.c.model_id],
            set_={"labeled": slo_counters.c.labeled + n,
                  "errors": slo_counters.c.errors + errors, "updated_at": now}))


def pairs_for_new_predictions(new_rows: list[PredictionRow],
                              waiting: dict[tuple[int, str], StoredLabel]) -> list[Pair]:
    """Pairs completed by newly stored predictions: labels that were waiting for them (the
    stored label wins over an inline one, as in the labels table), or their inline labels."""
    out: list[Pair] = []
    for r in new_rows:
        w = waiting.get(r.key)
        label_class = w.label_class if w is not None else r.gt_class
        if label_class is not None:
            out.append((r.model_id, r.score, r.probabilities, label_class))
    return out


def pairs_for_new_labels(pairs: list[CompletedPair]) -> list[Pair]:
    """Pairs completed by newly stored labels whose prediction is already stored."""
    return [(p.model_id, p.score, p.probabilities, p.label_class) for p in pairs
            if p.label_class is not None]
