"""Retention: predictions, keys, labels and bucket summaries older than the retention are
removed (on Postgres whole daily partitions are dropped, which costs no vacuum; rows are
deleted elsewhere); stored results and job runs after their own, longer retention; the
shared memo of costly figures down to its newest MODELMON_MEMO_MAX_ROWS."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta

from sqlalchemy import Engine, delete, text

from app.storage import imports, locks, memo, pending, summaries
from app.storage.partitions import PartitionManager
from app.storage.tables import (
    job_runs,
    labels,
    metric_results,
    prediction_keys,
    predictions,
)

log = logging.getLogger("modelmon.retention")


def run_retention(engine: Engine, settings, partitions: PartitionManager,  # noqa: ANN001
                  now: datetime | None = None) -> dict[str, int]:
    cutoff = (now or datetime.now(UTC)) - timedelta(days=settings.retention_days)
    out = {"partitions_dropped": 0, "rows_deleted": 0}
    with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            if not locks.try_hold(conn, locks.RETENTION):
                return out
            cutoff_day = cutoff.date()
            names = list(conn.execute(text(
                "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
                "JOIN pg_class p ON p.oid = i.inhparent WHERE p.relname = 'predictions'"))
                .scalars())
            for name in names:
                day = datetime.strptime(name.rsplit("_p", 1)[1], "%Y%m%d").date()
                # a partition holds [day, day + 1): drop it when all of it is older
                if day + timedelta(days=1) <= cutoff_day:
                    conn.execute(text(f'DROP TABLE IF EXISTS "{name}"'))
                    out["partitions_dropped"] += 1
            if out["partitions_dropped"]:
                partitions.forget()
            # Keys go exactly with their partitions: a key deleted while its prediction is
            # still stored would let a retry collide with the stored row.
            cutoff = datetime(cutoff_day.year, cutoff_day.month, cutoff_day.day, tzinfo=UTC)
        else:
            out["rows_deleted"] += conn.execute(
                delete(predictions).where(predictions.c.ts < cutoff)).rowcount
        out["rows_deleted"] += conn.execute(
            delete(prediction_keys).where(prediction_keys.c.ts < cutoff)).rowcount
        label_cutoff = (now or datetime.now(UTC)) - timedelta(days=settings.retention_days)
        out["rows_deleted"] += conn.execute(
            delete(labels).where(labels.c.ts < label_cutoff)).rowcount
        if out["rows_deleted"] or out["partitions_dropped"]:
            pending.recount(conn)  # labels or keys went: count the waiting ones again
        # Summaries go with the rows they summarise.
        out["summaries_deleted"] = summaries.delete_before(conn=conn, cutoff=label_cutoff)
        imports.delete_before(conn=conn, cutoff=label_cutoff)  # their ledger goes with them
        results_cutoff = (now or datetime.now(UTC)) - timedelta(
            days=settings.results_retention_days)
        out["results_deleted"] = conn.execute(
            delete(metric_results).where(metric_results.c.window_end < results_cutoff)
        ).rowcount + conn.execute(
            delete(job_runs).where(job_runs.c.window_end < results_cutoff)).rowcount
        out["memo_deleted"] = memo.prune(conn, settings.memo_max_rows)
    if any(out.values()):
        log.info("retention: %s", out)
    return out
