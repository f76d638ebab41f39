"""The ledger of summaries clients sent: each (source, model, version, bucket, kind,
sequence) is claimed once, so an upload sent again, twice at once or out of order adds
nothing the second time."""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, datetime
from typing import NamedTuple

from sqlalchemy import Connection, delete, func, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from app.storage.db import as_utc
from app.storage.tables import summary_imports


class ImportKey(NamedTuple):
    source: str
    model_id: int
    version_id: int
    bucket_start: datetime
    kind: str
    sequence: int


def claim(*, conn: Connection, keys: list[tuple[ImportKey, str, int]]) -> set[ImportKey]:
    """Record (key, profile_key, n) entries not recorded before; returns the keys this call
    recorded (the others were sent before). A concurrent claim of the same key waits for
    the other transaction and then finds it taken."""
    if not keys:
        return set()
    insert = pg_insert if conn.dialect.name == "postgresql" else sqlite_insert
    t = summary_imports
    now = datetime.now(UTC)
    stmt = insert(t).on_conflict_do_nothing().returning(
        t.c.source, t.c.model_id, t.c.version_id, t.c.bucket_start, t.c.kind, t.c.sequence)
    rows = conn.execute(stmt, [{**k._asdict(), "profile_key": p, "n": n, "received_at": now}
                               for k, p, n in keys])
    return {ImportKey(r.source, int(r.model_id), int(r.version_id), as_utc(r.bucket_start),
                      r.kind, int(r.sequence)) for r in rows}


def imported(*, conn: Connection, model_id: int, version_id: int, start: datetime,
             end: datetime) -> dict[tuple[datetime, str, str], int]:
    """Predictions counted by imported summaries per (bucket, kind, profile_key) of the
    version's buckets starting in [start, end)."""
    t = summary_imports
    q = (select(t.c.bucket_start, t.c.kind, t.c.profile_key, func.sum(t.c.n).label("n"))
         .where(t.c.model_id == model_id, t.c.version_id == version_id,
                t.c.bucket_start >= start, t.c.bucket_start < end)
         .group_by(t.c.bucket_start, t.c.kind, t.c.profile_key))
    out: dict[tuple[datetime, str, str], int] = defaultdict(int)
    for r in conn.execute(q):
        out[(as_utc(r.bucket_start), r.kind, r.profile_key)] += int(r.n)
    return dict(out)


def delete_before(*, conn: Connection, cutoff: datetime) -> int:
    return conn.execute(delete(summary_imports)
                        .where(summary_imports.c.bucket_start < cutoff)).rowcount
