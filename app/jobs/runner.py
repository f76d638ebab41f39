"""Running a job for one model and one clock-aligned window, exactly once across replicas.

Each (job, model, window) runs in one transaction that first takes a Postgres advisory lock
for (job, model) without waiting: a replica that does not get it leaves the window to the one
that has it. Inside, a window that already has a successful run is skipped; otherwise the
results and the success row are written together, so a process killed mid-job leaves nothing
behind and a later tick computes the window. The unique keys on results and on successful
runs are the last guard. On SQLite one process owns the scheduler (see scheduler.py).
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta

from sqlalchemy import Connection, Engine
from sqlalchemy.exc import IntegrityError

from app.evaluation import evaluate, rollup, windows
from app.evaluation.checks import JOBS
from app.evaluation.profiles import ProfileCache
from app.evaluation.windows import aligned_end
from app.settings import Settings
from app.storage import locks, registry, results
from app.storage import summaries as store
from app.storage.registry import ModelRow

log = logging.getLogger("modelmon.jobs")

WINDOW_JOBS = JOBS
WORKER = f"{socket.gethostname()}:{os.getpid()}"



def windows_due(now: datetime, settings: Settings,
                done: set[datetime]) -> list[tuple[datetime, datetime]]:
    """Windows ending at the latest ``job_catchup_windows`` boundaries that have no success
    yet, oldest first (a window another replica was busy with stays due until done)."""
    step = timedelta(seconds=settings.job_interval_seconds)
    length = timedelta(seconds=settings.job_window_seconds)
    end = aligned_end(now, settings.job_interval_seconds)
    ends = [end - k * step for k in range(settings.job_catchup_windows)]
    return [(e - length, e) for e in reversed(ends) if e not in done]


def due(conn: Connection, job: str, model: ModelRow, settings: Settings,
        now: datetime) -> list[tuple[datetime, datetime]]:
    earliest = aligned_end(now, settings.job_interval_seconds) - timedelta(
        seconds=settings.job_interval_seconds * settings.job_catchup_windows)
    return windows_due(now, settings, results.success_ends(
        conn=conn, job=job, model_id=model.id, since=earliest))


def run_window(engine: Engine, job: str, model: ModelRow, start: datetime, end: datetime,
               settings: Settings, *, now: datetime | None = None,
               on_done: Callable[[str, str, float], None] | None = None,
               profiles: ProfileCache | None = None) -> str:
    """Compute one window. Returns success, skipped (done elsewhere), locked (being done
    elsewhere) or failure (recorded; the window is retried on the next tick). Writes one log
    line with the outcome, the duration and the row counts."""
    started = datetime.now(UTC)
    outcome = "failure"
    counts: dict[str, int] = {}
    try:
        with windows.repeatable_read(engine.connect()) as conn, conn.begin():
            if not locks.try_hold(conn, locks.JOBS[job], model.id):
                outcome = "locked"
                return outcome
            if results.success_exists(conn=conn, job=job, model_id=model.id, window_end=end):
                outcome = "skipped"
                return outcome
            rows = evaluate.window_rows(job, conn, model, start, end, settings,
                                        now or started, profiles or ProfileCache(), counts)
            counts["results"] = len(rows)
            results.insert_results(conn=conn, rows=rows)
            results.record_run(conn=conn, job=job, model_id=model.id, window_start=start,
                               window_end=end, status="success", started_at=started,
                               worker=WORKER)
        outcome = "success"
        return outcome
    except IntegrityError:
        outcome = "skipped"  # another process stored this window first
        return outcome
    except Exception as exc:
        log.exception("job %s for model %s, window ending %s failed", job, model.name, end)
        try:
            with engine.begin() as conn:
                results.record_run(conn=conn, job=job, model_id=model.id, window_start=start,
                                   window_end=end, status="failure", started_at=started,
                                   worker=WORKER, error=f"{type(exc).__name__}: {exc}"[:2000])
        except Exception:  # noqa: BLE001 - the database itself may be down
            log.warning("could not record the failure of job %s", job)
        return outcome
    finally:
        seconds = (datetime.now(UTC) - started).total_seconds()
        if on_done is not None:
            on_done(job, outcome, seconds)
        log.log(logging.WARNING if outcome == "failure" else logging.INFO,
                "job %s for model %s, window ending %s: %s", job, model.name,
                end.isoformat(), outcome, extra={
                    "event": "job_window", "job_name": job, "model": model.name,
                    "window_start": start.isoformat(), "window_end": end.isoformat(),
                    "outcome": outcome, "duration_seconds": round(seconds, 6),
                    "predictions": counts.get("predictions", 0),
                    "labeled": counts.get("labeled", 0),
                    "results": counts.get("results", 0) if outcome == "success" else 0})


# (database, model id) -> when this process last audited the model's summaries
_last_audit: dict[tuple[str, int], datetime] = {}


def _audit_due(engine: Engine, model_id: int, now: datetime, interval: float) -> bool:
    key = (engine.url.render_as_string(hide_password=True), model_id)
    last = _last_audit.get(key)
    if interval <= 0 or (last is not None and 0 <= (now - last).total_seconds() < interval):
        return False
    _last_audit[key] = now
    return True


def maintain_summaries(engine: Engine, settings: Settings, now: datetime,
                       profiles: ProfileCache, models: list[ModelRow]) -> dict[str, int]:
    """Before the jobs: compact closed buckets, roll old ones up into hours and days (at
    most MODELMON_SUMMARY_ROLLUP_BATCH spans a tick), summarise rows stored before summaries
    existed, audit the summaries of the last closed buckets against their stored rows (when
    due; a bucket that differs is summarised again), and summarise again the drift of buckets
    the due drift windows need whose summaries were built on another profile."""
    bucket = settings.job_interval_seconds
    out = {"compacted": windows.compact(engine, before=aligned_end(now, bucket),
                                           max_cohort_values=settings.summary_max_cohort_values),
           "backfilled_rows": 0, "resummarised_rows": 0, "rolled_up_rows": 0}
    budget = settings.summary_rollup_batch
    for model in models:
        if budget > 0:
            rolled = rollup.rollup(engine, model, settings, now, budget)
            budget -= rolled.spans
            out["rolled_up_rows"] += rolled.rows
    by_id = {m.id: m for m in models}
    with engine.connect() as conn:
        pending = store.pending_backfill(conn=conn)
    for model_id, version_id, before in pending:
        if model_id in by_id:
            with engine.connect() as conn:
                cp = profiles.get(conn, [version_id]).get(version_id)
            out["backfilled_rows"] += windows.backfill(engine, by_id[model_id], version_id,
                                                       before, cp, bucket) or 0
    out["audited_buckets"] = out["repaired_buckets"] = 0
    for model in models:
        if _audit_due(engine, model.id, now, settings.summary_audit_interval_seconds):
            end = aligned_end(now, bucket)
            a = windows.audit(engine, model, end - timedelta(
                seconds=settings.summary_audit_lookback_seconds), end,
                bucket_seconds=bucket, profiles=profiles)
            out["audited_buckets"] += a.buckets
            out["repaired_buckets"] += a.repaired
    for model in models:
        with engine.connect() as conn:
            todo = due(conn, "drift", model, settings, now)
            if not todo:
                continue
            start, end = todo[0][0], todo[-1][1]
            vids = store.versions_in_window(conn=conn, model_id=model.id, start=start, end=end)
            compiled = profiles.get(conn, vids)
        for vid, cp in compiled.items():
            out["resummarised_rows"] += windows.resummarise(engine, model, vid, start, end,
                                                            cp, bucket)
    return out


def tick(engine: Engine, settings: Settings, *, now: datetime | None = None,
         jobs: Iterable[str] = WINDOW_JOBS,
         on_done: Callable[[str, str, float], None] | None = None,
         profiles: ProfileCache | None = None,
         stopping: Callable[[], bool] | None = None,
         on_upkeep: Callable[[dict[str, int]], None] | None = None) -> dict[str, int]:
    """One scheduler tick: summary upkeep, then every due window of every job for every
    model. When ``stopping()`` turns true (the process is shutting down), no further window
    starts: the windows left are due again at the next start."""
    now = now or datetime.now(UTC)
    profiles = profiles or ProfileCache()
    counts: dict[str, int] = {}
    with engine.connect() as conn:
        models = [m for m, _ in registry.list_models(conn=conn)]
    try:
        upkeep = maintain_summaries(engine, settings, now, profiles, models)
        if on_upkeep is not None:
            on_upkeep(upkeep)
    except Exception:
        log.exception("summary upkeep failed")
    for model in models:
        for job in jobs:
            if stopping is not None and stopping():
                counts["stopped"] = 1
                return counts
            with engine.connect() as conn:
                todo = due(conn, job, model, settings, now)
            for start, end in todo:
                if stopping is not None and stopping():
                    counts["stopped"] = 1
                    return counts
                outcome = run_window(engine, job, model, start, end, settings, now=now,
                                     on_done=on_done, profiles=profiles)
                counts[outcome] = counts.get(outcome, 0) + 1
    return counts
