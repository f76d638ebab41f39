"""Loading a window of predictions (with their labels, joined by prediction_id) as columns.

Jobs and on-demand reports both read through here, so a report over a window equals what the
job stored for it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

import numpy as np
from sqlalchemy import Connection, and_, func, select

from app.storage.registry import ModelRow
from app.storage.tables import labels, predictions


@dataclass
class Window:
    """One version's predictions in [start, end), as numpy columns in row order."""

    version_id: int
    start: datetime
    end: datetime
    features: dict[str, np.ndarray] = field(default_factory=dict)
    cohorts: dict[str, np.ndarray] = field(default_factory=dict)
    score: np.ndarray | None = None          # binary: positive-class probability
    probabilities: np.ndarray | None = None  # multiclass: n x k in model.classes order
    value: np.ndarray | None = None          # regression
    predicted_label: np.ndarray | None = None
    label_class: np.ndarray | None = None    # ground truth (object, None when unlabeled)
    label_value: np.ndarray | None = None    # ground truth (float, NaN when unlabeled)
    labeled: np.ndarray | None = None        # bool per row
    label_delay_seconds: np.ndarray | None = None  # per labeled row
    ts: np.ndarray | None = None             # epoch seconds

    @property
    def n(self) -> int:
        return 0 if self.ts is None else int(self.ts.shape[0])


def _utc(ts: datetime) -> datetime:
    return ts.replace(tzinfo=UTC) if ts.tzinfo is None else ts


def versions_in_window(*, conn: Connection, model_id: int, start: datetime,
                       end: datetime) -> list[int]:
    q = (select(predictions.c.version_id).distinct()
         .where(predictions.c.model_id == model_id, predictions.c.ts >= start,
                predictions.c.ts < end))
    return sorted(r[0] for r in conn.execute(q))


def first_prediction_time(*, conn: Connection, model_id: int, version_id: int) -> datetime | None:
    q = select(func.min(predictions.c.ts)).where(predictions.c.model_id == model_id,
                                                 predictions.c.version_id == version_id)
    ts = conn.execute(q).scalar_one_or_none()
    return _utc(ts) if ts is not None else None


def nth_prediction_time(*, conn: Connection, model_id: int, version_id: int,
                        start: datetime, n: int) -> datetime | None:
    """Time of the n-th prediction of a version from ``start`` on (None if fewer exist)."""
    q = (select(predictions.c.ts)
         .where(predictions.c.model_id == model_id, predictions.c.version_id == version_id,
                predictions.c.ts >= start)
         .order_by(predictions.c.ts).offset(n - 1).limit(1))
    ts = conn.execute(q).scalar_one_or_none()
    return _utc(ts) if ts is not None else None


def load_window(*, conn: Connection, model: ModelRow, version_id: int, start: datetime,
                end: datetime, limit: int | None = None) -> Window:
    """Rows of one version in [start, end), labels left-joined."""
    p, lab = predictions, labels
    q = (
        select(p.c.ts, p.c.features, p.c.cohorts, p.c.score, p.c.value, p.c.probabilities,
               p.c.predicted_label, lab.c.label_class, lab.c.label_value,
               lab.c.ts.label("label_ts"))
        .select_from(p.outerjoin(lab, and_(lab.c.model_id == p.c.model_id,
                                           lab.c.prediction_id == p.c.prediction_id)))
        .where(p.c.model_id == model.id, p.c.version_id == version_id, p.c.ts >= start,
               p.c.ts < end)
        .order_by(p.c.ts)
    )
    if limit is not None:
        q = q.limit(limit)
    rows = conn.execute(q).all()
    return build_window(model, version_id, start, end, rows)


def build_window(model: ModelRow, version_id: int, start: datetime, end: datetime,
                 rows: Sequence) -> Window:
    w = Window(version_id=version_id, start=start, end=end)
    n = len(rows)
    w.ts = np.array([_utc(r.ts).timestamp() for r in rows], dtype=np.float64)
    feats = [r.features or {} for r in rows]
    for f in model.features:
        name = f["name"]
        column = [d.get(name) for d in feats]
        if f["type"] == "numeric":
            w.features[name] = np.array(column, dtype=np.float64) if n else np.empty(0)
        else:
            w.features[name] = np.array(column, dtype=object)
    cohorts = [r.cohorts or {} for r in rows]
    for key in model.cohort_keys:
        w.cohorts[key] = np.array([c.get(key) for c in cohorts], dtype=object)
    if model.task == "binary_classification":
        w.score = np.array([r.score for r in rows], dtype=np.float64)
    elif model.task == "multiclass_classification":
        classes = model.classes or []
        w.probabilities = np.array(
            [[(r.probabilities or {}).get(c, 0.0) for c in classes] for r in rows],
            dtype=np.float64,
        ).reshape(n, len(classes))
    else:
        w.value = np.array([r.value for r in rows], dtype=np.float64)
    w.predicted_label = np.array([r.predicted_label for r in rows], dtype=object)
    w.labeled = np.array([(r.label_class is not None or r.label_value is not None)
                          for r in rows], dtype=bool)
    w.label_class = np.array([r.label_class for r in rows], dtype=object)
    w.label_value = np.array([np.nan if r.label_value is None else r.label_value for r in rows],
                             dtype=np.float64)
    w.label_delay_seconds = np.array(
        [(_utc(r.label_ts) - _utc(r.ts)).total_seconds() for r in rows
         if r.label_ts is not None], dtype=np.float64)
    return w
