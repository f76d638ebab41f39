"""Counting labeled predictions and errors the moment a pair is complete.

A pair (prediction, ground truth) completes when the second of the two is stored: an inline
label, a label for a stored prediction, or a prediction whose label came first. Each
completion adds to the model's row in `slo_counters` inside the same transaction, so the
counters are exact, monotonic and identical on every replica, and the burn-rate windows of
the SLO alerts (down to 5 minutes) follow label arrival. A label and its prediction in
flight together are ordered by the writer's pairing lock, so every pair counts once.
Regression models have no error rate and are not counted. What is wrong is decided by the
rule the bucket summaries apply too (monitoring/wrong.py).
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any, NamedTuple

import numpy as np
from sqlalchemy import Connection
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from app.ingest.rows import CompletedPair, PredictionRow, StoredLabel
from app.ingest.schema import ModelSchema
from app.monitoring.wrong import BINARY, wrong
from app.storage.tables import slo_counters


class Pair(NamedTuple):
    """A prediction and its label, as the SLO counters read them."""

    model_id: int
    score: float | None
    probabilities: Any  # dict, or its JSON text
    label_class: str | None


def wrong_count(schema: ModelSchema, pairs: list[Pair]) -> int:
    """How many of a classification model's labeled pairs are wrong (monitoring/wrong.py)."""
    row = schema.row
    classes = row.classes
    if row.task == BINARY:
        predicted = np.array([np.nan if p.score is None else p.score for p in pairs],
                             dtype=np.float64)
        label = np.array([p.label_class == classes[1] for p in pairs], dtype=np.float64)
    else:
        index = {c: i for i, c in enumerate(classes)}
        probs = [json.loads(p.probabilities) if isinstance(p.probabilities, str)
                 else p.probabilities or {} for p in pairs]
        predicted = np.array([[pr.get(c, 0.0) for c in classes] for pr in probs],
                             dtype=np.float64).reshape(len(pairs), len(classes))
        label = np.array([index.get(p.label_class, np.nan) for p in pairs], dtype=np.float64)
    return int(wrong(row.task, predicted, label).sum())


def add(conn: Connection, schemas: dict[int, ModelSchema], pairs: Iterable[Pair]) -> None:
    by_model: dict[int, list[Pair]] = defaultdict(list)
    for p in pairs:
        if p.label_class is not None and schemas[p.model_id].row.classes is not None:
            by_model[p.model_id].append(p)
    if not by_model:
        return
    insert = pg_insert if conn.dialect.name == "postgresql" else sqlite_insert
    now = datetime.now(UTC)
    for model_id, ps in sorted(by_model.items()):
        n, errors = len(ps), wrong_count(schemas[model_id], ps)
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
            out.append(Pair(r.model_id, r.score, r.probabilities, label_class))
    return out


def pairs_for_new_labels(pairs: list[CompletedPair]) -> list[Pair]:
    """Pairs completed by newly stored labels whose prediction is already stored."""
    return [Pair(p.model_id, p.score, p.probabilities, p.label_class) for p in pairs
            if p.label_class is not None]
