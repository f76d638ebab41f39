"""Reading stored predictions (with their labels, joined by prediction_id).

Windows are evaluated from bucket summaries; raw rows are read only to build those summaries
again (a new reference, the backfill of rows stored before summaries existed), to fit a
baseline profile from a version's first traffic, and for drill-down.

A thin row (a prediction summarised where it was made, stored for pairing only; its features
document is JSON null, app/ingest/thin.py) is none of those rows: every reader here leaves it
out, but for the labeled pairs ``stored_by_bucket`` counts and ``load_rows(thin=True)``
reads.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, Text, and_, case, cast, func, select

from app.storage.db import as_utc
from app.storage.tables import labels, predictions

# Whether a stored prediction is a thin row (its features document is JSON null). PostgreSQL
# compares a text's length before its bytes: a full row's document is not read (detoasted).
THIN = cast(predictions.c.features, Text) == "null"
FULL = cast(predictions.c.features, Text) != "null"


def first_prediction_time(*, conn: Connection, model_id: int, version_id: int) -> datetime | None:
    q = select(func.min(predictions.c.ts)).where(predictions.c.model_id == model_id,
                                                 predictions.c.version_id == version_id, FULL)
    ts = conn.execute(q).scalar_one_or_none()
    return as_utc(ts) if ts is not None else None


def nth_prediction_time(*, conn: Connection, model_id: int, version_id: int,
                        start: datetime, n: int) -> datetime | None:
    """Time of the n-th prediction of a version from ``start`` on (None if fewer exist)."""
    q = (select(predictions.c.ts)
         .where(predictions.c.model_id == model_id, predictions.c.version_id == version_id,
                predictions.c.ts >= start, FULL)
         .order_by(predictions.c.ts).offset(n - 1).limit(1))
    ts = conn.execute(q).scalar_one_or_none()
    return as_utc(ts) if ts is not None else None


def load_rows(*, conn: Connection, model_id: int, version_id: int, start: datetime,
              end: datetime, limit: int | None = None,
              received_before: datetime | None = None, thin: bool = False) -> list[Any]:
    """Rows of one version in [start, end) in time order, labels left-joined; with ``thin``
    its thin rows that have a label instead.

    With ``received_before``, only predictions received before it, and only labels received
    before it (what existed when summaries were introduced)."""
    p, lab = predictions, labels
    join = and_(lab.c.model_id == p.c.model_id, lab.c.prediction_id == p.c.prediction_id)
    conds = [p.c.model_id == model_id, p.c.version_id == version_id, p.c.ts >= start,
             p.c.ts < end, THIN & lab.c.prediction_id.is_not(None) if thin else FULL]
    if received_before is not None:
        join = and_(join, lab.c.received_at < received_before)
        conds.append(p.c.received_at < received_before)
    q = (
        select(p.c.version_id, p.c.ts, p.c.features, p.c.cohorts, p.c.score, p.c.value,
               p.c.probabilities, lab.c.label_class, lab.c.label_value,
               lab.c.ts.label("label_ts"))
        .select_from(p.outerjoin(lab, join))
        .where(*conds)
        .order_by(p.c.ts)
    )
    if limit is not None:
        q = q.limit(limit)
    return list(conn.execute(q))


def latest_prediction(*, conn: Connection, model_id: int) -> datetime | None:
    """The timestamp of the model's latest stored prediction (None: none stored)."""
    ts = conn.execute(select(func.max(predictions.c.ts))
                      .where(predictions.c.model_id == model_id)).scalar()
    return None if ts is None else as_utc(ts)


def received_range(*, conn: Connection, model_id: int, version_id: int,
                   received_before: datetime) -> tuple[datetime, datetime] | None:
    """(earliest, latest) timestamp of the version's predictions received before a time."""
    p = predictions
    lo, hi = conn.execute(select(func.min(p.c.ts), func.max(p.c.ts)).where(
        p.c.model_id == model_id, p.c.version_id == version_id,
        p.c.received_at < received_before, FULL)).one()
    return None if lo is None else (as_utc(lo), as_utc(hi))


def stored_by_bucket(*, conn: Connection, model_id: int, start: datetime, end: datetime,
                     bucket_seconds: float) -> dict[tuple[int, datetime], tuple[int, int]]:
    """(predictions, labeled predictions) stored per (version, bucket start) for the
    buckets in [start, end), in one grouped scan: the predictions of full rows, the labeled
    ones of full and thin rows (the service sums the pairs of both)."""
    p, lab = predictions, labels
    join = p.outerjoin(lab, and_(lab.c.model_id == p.c.model_id,
                                 lab.c.prediction_id == p.c.prediction_id))
    of_range = (p.c.model_id == model_id, p.c.ts >= start, p.c.ts < end)
    out: dict[tuple[int, datetime], tuple[int, int]] = {}
    if conn.dialect.name != "postgresql":  # the embedded store: its rows, grouped here
        for vid, ts, labeled, full in conn.execute(select(
                p.c.version_id, p.c.ts, lab.c.prediction_id.is_not(None), FULL)
                .select_from(join).where(*of_range)):
            key = (int(vid), _bucket_of(as_utc(ts), bucket_seconds))
            n, k = out.get(key, (0, 0))
            out[key] = (n + int(bool(full)), k + int(bool(labeled)))
        return out
    index = func.floor(func.extract("epoch", p.c.ts) / bucket_seconds).label("b")
    q = (select(p.c.version_id, index, func.count(case((FULL, 1))),
                func.count(lab.c.prediction_id))
         .select_from(join).where(*of_range).group_by(p.c.version_id, index))
    return {(int(v), datetime.fromtimestamp(int(b) * bucket_seconds, UTC)): (int(n), int(k))
            for v, b, n, k in conn.execute(q)}


def _bucket_of(ts: datetime, bucket_seconds: float) -> datetime:
    """The start of the bucket holding ``ts``, as app/evaluation/summaries.bucket_starts
    computes it."""
    return datetime.fromtimestamp(math.floor(ts.timestamp() / bucket_seconds) * bucket_seconds,
                                  UTC)
