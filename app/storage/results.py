"""Stored metric results and job runs."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, and_, func, insert, literal, select, tuple_

from app.storage.db import as_utc
from app.storage.tables import job_runs, metric_results, model_versions


def success_exists(*, conn: Connection, job: str, model_id: int | None,
                   window_end: datetime) -> bool:
    q = select(func.count()).select_from(job_runs).where(
        job_runs.c.job == job, job_runs.c.window_end == window_end,
        job_runs.c.status == "success",
        job_runs.c.model_id.is_(None) if model_id is None else job_runs.c.model_id == model_id)
    return bool(conn.execute(q).scalar_one())


def success_ends(*, conn: Connection, job: str, model_id: int, since: datetime
                 ) -> set[datetime]:
    """End of every window of (job, model) computed successfully after ``since``."""
    j = job_runs
    q = select(j.c.window_end).where(j.c.job == job, j.c.status == "success",
                                     j.c.model_id == model_id, j.c.window_end > since)
    return {as_utc(end) for end in conn.execute(q).scalars()}


def record_run(*, conn: Connection, job: str, model_id: int | None, window_start: datetime,
               window_end: datetime, status: str, started_at: datetime, worker: str,
               error: str | None = None) -> None:
    conn.execute(insert(job_runs).values(
        job=job, model_id=model_id, window_start=window_start, window_end=window_end,
        status=status, started_at=started_at, finished_at=datetime.now(UTC), error=error,
        worker=worker))


def insert_results(*, conn: Connection, rows: Sequence[dict[str, Any]]) -> None:
    if rows:
        conn.execute(insert(metric_results), list(rows))


def history(*, conn: Connection, model_id: int, metric: str, subject: str | None,
            version_id: int | None, start: datetime, end: datetime,
            limit: int = 10_000, after: tuple[datetime, str, int, int] | None = None
            ) -> list[Any]:
    """Stored results without their detail in (window_end, subject, version_id, id) order,
    at most ``limit``, starting after the row whose key is ``after`` (keyset pagination: a
    page costs what it returns, and rows written meanwhile neither repeat nor shift the next
    page)."""
    m = metric_results
    conds = [m.c.model_id == model_id, m.c.metric == metric, m.c.window_end > start,
             m.c.window_end <= end]
    if subject is not None:
        conds.append(m.c.subject == subject)
    if version_id is not None:
        conds.append(m.c.version_id == version_id)
    key = (m.c.window_end, m.c.subject, m.c.version_id, m.c.id)
    if after is not None:
        conds.append(tuple_(*key) > tuple_(*(literal(v, c.type)
                                             for v, c in zip(after, key, strict=True))))
    # every column but the detail (a drift row's bins and counts: the larger part to read
    # and decode, and nothing the history gives)
    q = (select(*(c for c in m.c if c.name != "detail")).where(and_(*conds))
         .order_by(*key).limit(limit))
    return list(conn.execute(q))


def last_run(*, conn: Connection, model_id: int) -> Any:
    """The model's latest finished job run (job, status, window_end, finished_at), or None."""
    j = job_runs
    q = (select(j.c.job, j.c.status, j.c.window_end, j.c.finished_at)
         .where(j.c.model_id == model_id, j.c.finished_at.is_not(None))
         .order_by(j.c.finished_at.desc(), j.c.id.desc()).limit(1))
    return conn.execute(q).first()


def latest_window_decisions(*, conn: Connection, model_id: int, job: str, start: datetime,
                            end: datetime) -> list[Any]:
    """Per version of the model, the rows of ``job``'s latest stored window ending in
    (``start``, ``end``], without their detail: version_id, metric, subject, decision,
    window_start, window_end. One index descent per version (ix_metric_results_latest), then
    that window's rows, in one statement: the cost follows the versions, not the history."""
    m, v = metric_results, model_versions
    we = (select(m.c.window_end)
          .where(m.c.job == job, m.c.model_id == model_id, m.c.version_id == v.c.id,
                 m.c.window_end > start, m.c.window_end <= end)
          .order_by(m.c.window_end.desc()).limit(1).correlate(v).scalar_subquery())
    latest = select(v.c.id.label("vid"), we.label("we")).where(
        v.c.model_id == model_id).subquery()
    q = (select(m.c.version_id, m.c.metric, m.c.subject, m.c.decision, m.c.window_start,
                m.c.window_end)
         .join(latest, and_(m.c.job == job, m.c.model_id == model_id,
                            m.c.version_id == latest.c.vid, m.c.window_end == latest.c.we)))
    return list(conn.execute(q))
