"""Bucket summary rows: appended by ingest, read by window, compacted, rolled up into hours
and days, retired."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple

from sqlalchemy import Connection, and_, case, delete, func, insert, or_, select

from app.storage.db import as_utc
from app.storage.tables import bucket_summaries, models, summary_backfill

OUTCOME, DRIFT = "outcome", "drift"
IMPORTED = "import"  # the origin of a summary a client sent (POST /v1/summaries)
RAW_MARK = b"R"  # first byte of an uncompressed payload, as earlier releases wrote batch rows


class SummaryRow(NamedTuple):
    version_id: int
    bucket_start: datetime
    kind: str
    profile_key: str
    n: int
    payload: bytes
    origin: str = ""  # "" built by the service from stored rows, or IMPORTED
    span: int = 0  # seconds from bucket_start the row covers; 0: one job interval


_APPEND = insert(bucket_summaries)  # built once: its cache key is computed once


def append(*, conn: Connection, model_id: int, rows: Sequence[SummaryRow]) -> None:
    if not rows:
        return
    now = datetime.now(UTC)
    if conn.dialect.name == "postgresql":
        _append_pg(conn, model_id, rows, now)
        return
    conn.execute(_APPEND, [
        {"model_id": model_id, "version_id": r.version_id, "bucket_start": r.bucket_start,
         "kind": r.kind, "profile_key": r.profile_key, "n": r.n, "payload": r.payload,
         "created_at": now, "origin": r.origin, "bucket_seconds": r.span} for r in rows])


_COLUMNS = ("model_id", "version_id", "bucket_start", "kind", "profile_key", "n", "payload",
            "created_at", "origin", "bucket_seconds")
APPEND_VALUES = 50  # rows per INSERT statement on PostgreSQL


def _append_pg(conn: Connection, model_id: int, rows: Sequence[SummaryRow],
               now: datetime) -> None:
    """A batch's summary rows are few (one per kind and bucket): one INSERT of that many
    VALUES rows, straight to the driver, since SQLAlchemy's executemany (psycopg's pipeline)
    costs more Python than the rows themselves."""
    for i in range(0, len(rows), APPEND_VALUES):
        part = rows[i:i + APPEND_VALUES]
        args: list[Any] = []
        for r in part:
            args += (model_id, r.version_id, r.bucket_start, r.kind, r.profile_key, r.n,
                     r.payload, now, r.origin, r.span)
        conn.exec_driver_sql(_values_sql(len(part)), tuple(args))


@functools.cache
def _values_sql(n_rows: int) -> str:
    row = "(" + ", ".join(["%s"] * len(_COLUMNS)) + ")"
    return (f"INSERT INTO bucket_summaries ({', '.join(_COLUMNS)}) VALUES "
            + ", ".join([row] * n_rows))


def window_rows(*, conn: Connection, model_id: int, version_id: int, start: datetime,
                end: datetime) -> list[SummaryRow]:
    """Every summary row of the version's buckets starting in [start, end), in one read."""
    b = bucket_summaries
    q = (select(b.c.version_id, b.c.bucket_start, b.c.kind, b.c.profile_key, b.c.n,
                b.c.payload, b.c.origin, b.c.bucket_seconds)
         .where(b.c.model_id == model_id, b.c.version_id == version_id,
                b.c.bucket_start >= start, b.c.bucket_start < end))
    return [SummaryRow(r.version_id, as_utc(r.bucket_start), r.kind, r.profile_key, int(r.n),
                       bytes(r.payload), r.origin, int(r.bucket_seconds))
            for r in conn.execute(q)]


def coverage(*, conn: Connection, model_id: int, version_id: int, start: datetime,
             end: datetime) -> list[tuple[datetime, int, str, str, int]]:
    """(bucket_start, span, kind, profile_key, predictions covered) of the version's buckets
    starting in [start, end) by the service's own summaries (those it can rebuild from
    stored rows), without reading the payloads."""
    b = bucket_summaries
    q = (select(b.c.bucket_start, b.c.bucket_seconds, b.c.kind, b.c.profile_key,
                func.sum(b.c.n).label("n"))
         .where(b.c.model_id == model_id, b.c.version_id == version_id,
                b.c.bucket_start >= start, b.c.bucket_start < end, b.c.origin == "")
         .group_by(b.c.bucket_start, b.c.bucket_seconds, b.c.kind, b.c.profile_key))
    return [(as_utc(r.bucket_start), int(r.bucket_seconds), r.kind, r.profile_key, int(r.n))
            for r in conn.execute(q)]


def versions_in_window(*, conn: Connection, model_id: int, start: datetime,
                       end: datetime) -> list[int]:
    """Versions with predictions counted in buckets starting in [start, end)."""
    b = bucket_summaries
    q = (select(b.c.version_id).distinct()
         .where(b.c.model_id == model_id, b.c.kind == OUTCOME, b.c.n > 0,
                b.c.bucket_start >= start, b.c.bucket_start < end))
    return sorted(conn.execute(q).scalars())


def recent_versions(*, conn: Connection, since: datetime, limit: int) -> list[tuple[str, int]]:
    """(model name, version id) of the versions with predictions counted in buckets starting
    at or after ``since``, the most recently active first, at most ``limit``."""
    b = bucket_summaries
    last = func.max(b.c.bucket_start).label("last")
    q = (select(models.c.name, b.c.version_id, last)
         .join(models, models.c.id == b.c.model_id)
         .where(b.c.kind == OUTCOME, b.c.n > 0, b.c.bucket_start >= since)
         .group_by(models.c.name, b.c.version_id)
         .order_by(last.desc(), b.c.version_id).limit(limit))
    return [(name, vid) for name, vid, _ in conn.execute(q)]


def fragmented(*, conn: Connection, before: datetime) -> list[tuple[Any, ...]]:
    """(model_id, version_id, bucket_start, kind, profile_key, origin, span) of closed
    buckets held in more than one row, or in one row stored uncompressed (as a batch wrote
    it)."""
    b = bucket_summaries
    key = (b.c.model_id, b.c.version_id, b.c.bucket_start, b.c.kind, b.c.profile_key,
           b.c.origin, b.c.bucket_seconds)
    raw = func.max(case((func.substr(b.c.payload, 1, 1) == RAW_MARK, 1), else_=0))
    q = (select(*key).where(b.c.bucket_start < before).group_by(*key)
         .having(or_(func.count() > 1, raw == 1)))
    return [tuple(r) for r in conn.execute(q)]


def take(*, conn: Connection, model_id: int, version_id: int, bucket_start: datetime,
         kind: str, profile_key: str | None = None, origin: str = "",
         span: int | None = 0) -> list[tuple[str, int, bytes]]:
    """Delete a bucket's rows of one kind and origin (and profile, if given) covering
    ``span`` seconds from ``bucket_start`` (0: one job interval; None: any), returning
    them."""
    b = bucket_summaries
    conds = [b.c.model_id == model_id, b.c.version_id == version_id,
             b.c.bucket_start == bucket_start, b.c.kind == kind, b.c.origin == origin]
    if profile_key is not None:
        conds.append(b.c.profile_key == profile_key)
    if span is not None:
        conds.append(b.c.bucket_seconds == span)
    res = conn.execute(delete(b).where(and_(*conds))
                       .returning(b.c.profile_key, b.c.n, b.c.payload))
    return [(r.profile_key, int(r.n), bytes(r.payload)) for r in res]


def take_span(*, conn: Connection, model_id: int, version_id: int, start: datetime,
              end: datetime, kind: str, profile_key: str | None, origin: str,
              max_span: int) -> list[tuple[int, bytes]]:
    """Delete the rows of one kind, profile (None: any) and origin starting in [start, end)
    that cover at most ``max_span`` seconds, returning (n, payload) of each. A row deleted by
    a concurrent transaction meanwhile is not returned (DELETE ... RETURNING), so a row is
    merged into one result only."""
    b = bucket_summaries
    conds = [b.c.model_id == model_id, b.c.version_id == version_id,
             b.c.bucket_start >= start, b.c.bucket_start < end, b.c.kind == kind,
             b.c.origin == origin, b.c.bucket_seconds <= max_span]
    if profile_key is not None:
        conds.append(b.c.profile_key == profile_key)
    res = conn.execute(delete(b).where(*conds).returning(b.c.n, b.c.payload))
    return [(int(r.n), bytes(r.payload)) for r in res]


def rollup_candidates(*, conn: Connection, model_id: int, before: datetime, span: int,
                      limit: int) -> list[tuple[int, datetime, str, str, str]]:
    """(version_id, bucket_start, kind, profile_key, origin) of the model's rows starting
    before ``before`` that cover less than ``span`` seconds, oldest first, at most
    ``limit``."""
    b = bucket_summaries
    key = (b.c.version_id, b.c.bucket_start, b.c.kind, b.c.profile_key, b.c.origin)
    q = (select(*key).distinct()
         .where(b.c.model_id == model_id, b.c.bucket_start < before,
                b.c.bucket_seconds < span)
         .order_by(b.c.bucket_start, b.c.version_id, b.c.kind, b.c.profile_key, b.c.origin)
         .limit(limit))
    return [(int(r.version_id), as_utc(r.bucket_start), r.kind, r.profile_key, r.origin)
            for r in conn.execute(q)]


def spanning(*, conn: Connection, model_id: int, at: datetime, span: int) -> bool:
    """Whether a row of the model starting at ``at`` covers ``span`` seconds (a roll-up)."""
    b = bucket_summaries
    q = (select(b.c.id).where(b.c.model_id == model_id, b.c.bucket_start == at,
                              b.c.bucket_seconds == span).limit(1))
    return conn.execute(q).first() is not None


def rolled_spans(*, conn: Connection, model_id: int, start: datetime, end: datetime,
                 longest: int) -> list[tuple[datetime, int]]:
    """(bucket_start, span) of the model's rolled-up rows (span > 0) that overlap
    [start, end), given that none covers more than ``longest`` seconds."""
    b = bucket_summaries
    q = (select(b.c.bucket_start, b.c.bucket_seconds).distinct()
         .where(b.c.model_id == model_id, b.c.bucket_seconds > 0,
                b.c.bucket_start > start - timedelta(seconds=longest),
                b.c.bucket_start < end))
    return [(as_utc(r.bucket_start), int(r.bucket_seconds)) for r in conn.execute(q)
            if as_utc(r.bucket_start) + timedelta(seconds=int(r.bucket_seconds)) > start]


def delete_before(*, conn: Connection, cutoff: datetime) -> int:
    """Rows of one job interval starting before ``cutoff``, and rolled-up rows once all
    their span is before it (as a day's partition of predictions goes)."""
    b = bucket_summaries
    spans = [int(s) for s in conn.execute(select(b.c.bucket_seconds).distinct().where(
        b.c.bucket_seconds > 0, b.c.bucket_start < cutoff)).scalars()]
    gone = conn.execute(delete(b).where(b.c.bucket_seconds == 0,
                                        b.c.bucket_start < cutoff)).rowcount
    for s in spans:
        gone += conn.execute(delete(b).where(
            b.c.bucket_seconds == s,
            b.c.bucket_start <= cutoff - timedelta(seconds=s))).rowcount
    return gone


def pending_backfill(*, conn: Connection) -> list[tuple[int, int, datetime]]:
    """(model_id, version_id, received_before) of versions not yet summarised."""
    s = summary_backfill
    return [(r.model_id, r.version_id, as_utc(r.received_before)) for r in conn.execute(
        select(s.c.model_id, s.c.version_id, s.c.received_before).order_by(s.c.version_id))]


def finish_backfill(*, conn: Connection, version_id: int) -> None:
    conn.execute(delete(summary_backfill).where(summary_backfill.c.version_id == version_id))
