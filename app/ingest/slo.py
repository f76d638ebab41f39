"""Counting labeled predictions and errors the moment a pair is complete.

A pair (prediction, ground truth) completes when the second of the two is stored: an inline
label, a label for a stored prediction, or a prediction whose label came first. Each
completion adds to the model's row in `slo_counters` inside the same transaction, so the
counters are exact, monotonic and identical on every replica, and the burn-rate windows of
the SLO alerts (down to 5 minutes) follow label arrival. A pair completed by two concurrent
transactions at once (its label and its prediction in flight together) is not counted.
Regression models have no error rate and are not counted.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, select, tuple_
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from app.ingest.validation import ModelSchema
from app.storage.tables import prediction_keys, predictions, slo_counters

_IN_CHUNK = 400
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


def _chunks(keys: list[tuple[int, str]]) -> Iterable[list[tuple[int, str]]]:
    for i in range(0, len(keys), _IN_CHUNK):
        yield keys[i:i + _IN_CHUNK]


def pairs_for_new_predictions(new_rows: list[tuple],
                              waiting: dict[tuple[int, str], str]) -> list[Pair]:
    """Pairs completed by newly stored predictions: their inline labels, or labels that were
    waiting for them. Row layout: app/ingest/writer.py STAGE_COLUMNS."""
    out: list[Pair] = []
    for r in new_rows:
        label_class = r[12] if r[12] is not None else waiting.get((r[0], r[2]))
        if label_class is not None:
            out.append((r[0], r[7], r[9], label_class))
    return out


def pairs_for_new_labels(conn: Connection, new_labels: list[tuple[int, str, str | None]]
                         ) -> list[Pair]:
    """Pairs completed by newly stored labels whose prediction is already stored."""
    label_of = {(m, p): c for m, p, c in new_labels if c is not None}
    out: list[Pair] = []
    keys = list(label_of)
    pk, p = prediction_keys, predictions
    for chunk in _chunks(keys):
        q = (select(p.c.model_id, p.c.prediction_id, p.c.score, p.c.probabilities)
             .select_from(pk.join(p, (p.c.model_id == pk.c.model_id) & (p.c.ts == pk.c.ts)
                                  & (p.c.prediction_id == pk.c.prediction_id)))
             .where(tuple_(pk.c.model_id, pk.c.prediction_id).in_(chunk)))
        for model_id, pid, score, probabilities in conn.execute(q):
            out.append((model_id, score, probabilities, label_of[(model_id, pid)]))
    return out
