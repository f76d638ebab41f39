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
from typing import Any

from sqlalchemy import Connection, Engine
from sqlalchemy.exc import IntegrityError

from app.evaluation import compute, windows
from app.evaluation import policy as model_policy
from app.evaluation import results as result_rows
from app.evaluation.profiles import ProfileCache
from app.evaluation.references import reference_for
from app.evaluation.windows import aligned_end
from app.settings import Settings
from app.storage import locks, registry, results
from app.storage import summaries as store
from app.storage.registry import ModelRow

log = logging.getLogger("modelmon.jobs")

WINDOW_JOBS = ("drift", "calibration", "cohorts", "labels")
# Jobs that need ground truth: they evaluate the window that ended `label_lag_seconds` ago.
LABEL_JOBS = ("calibration", "cohorts", "labels")
WORKER = f"{socket.gethostname()}:{os.getpid()}"

Row = dict[str, Any]


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


def compute_rows(job: str, conn: Connection, model: ModelRow, start: datetime, end: datetime,
                 settings: Settings, now: datetime, profiles: ProfileCache,
                 counts: dict[str, int] | None = None) -> list[Row]:
    """The result rows of one job window; ``counts``, when given, gets the predictions and
    labeled predictions the window held (summed over its versions)."""
    counts = {} if counts is None else counts
    pol = model_policy.effective(settings, model.policy)
    th, per_feature, per_key = pol.thresholds, pol.features, pol.cohort_keys
    if job in LABEL_JOBS and pol.label_lag_seconds:
        lag = timedelta(seconds=pol.label_lag_seconds)
        start, end = start - lag, end - lag
    rows: list[Row] = []
    bucket = settings.job_interval_seconds
    cap = settings.summary_max_cohort_values
    long_start = end - timedelta(seconds=settings.job_long_window_seconds)
    longer = settings.job_long_window_seconds > (end - start).total_seconds()
    training = registry.training_blocks(conn=conn, model_id=model.id) \
        if job == "cohorts" else {}
    for version_id in store.versions_in_window(conn=conn, model_id=model.id, start=start,
                                               end=end):
        if job == "drift":
            ref = reference_for(conn=conn, model=model, version_id=version_id,
                                settings=settings, now=now, profiles=profiles,
                                store_baseline=True)
            if ref.profile is not None:
                w = windows.merge(conn, model, version_id, start, end, bucket_seconds=bucket,
                                  cp=ref.profile, max_cohort_values=cap)
                _count(counts, w)
                used = registry.feature_importance(conn=conn, version_id=version_id)
                report = compute.drift(w, ref.profile, th, per_feature, used)
                if longer and _too_small(report):
                    wl = windows.merge(conn, model, version_id, long_start, end,
                                       bucket_seconds=bucket, cp=ref.profile,
                                       max_cohort_values=cap)
                    short, long = _split_drift(
                        report, compute.drift(wl, ref.profile, th, per_feature, used), wl)
                    rows += result_rows.drift_rows(model, wl, long, ref.info)
                    report = short
                rows += result_rows.drift_rows(model, w, report, ref.info)
            continue
        w = windows.merge(conn, model, version_id, start, end, bucket_seconds=bucket, cp=None,
                          max_cohort_values=cap)
        _count(counts, w)

        def long_window(version_id: int = version_id) -> windows.MergedWindow:
            return windows.merge(conn, model, version_id, long_start, end,
                                 bucket_seconds=bucket, cp=None, max_cohort_values=cap)

        if job == "calibration":
            r = compute.calibration(model, w, th)
            if longer and r.get("gate") == "min_support":
                wl = long_window()
                rl = compute.calibration(model, wl, th)
                if rl.get("gate") != "min_support":
                    rows += result_rows.calibration_rows(model, wl, _horizon(rl, wl))
                    continue
            rows += result_rows.calibration_rows(model, w, r)
        elif job == "cohorts":
            # the overall error and gap of every model with labels; cohorts where it has keys
            rows += result_rows.overall_error_rows(model, w, compute.overall_error(model, w))
            if model.cohort_keys:
                r = compute.cohorts(model, w, th, per_key)
                if longer and _too_small_cohorts(r):
                    wl = long_window()
                    short, long = _split_cohorts(r, compute.cohorts(model, wl, th, per_key),
                                                 wl)
                    rows += result_rows.cohort_rows(model, wl, long)
                    r = short
                rows += result_rows.cohort_rows(model, w, r)
            registered = training.get(version_id, {})
            g = compute.generalization_gap(model, w, th, registered)
            if longer and g is not None and _too_small_gap(g):
                wl = long_window()
                short_g, long_g = _split_gap(
                    g, compute.generalization_gap(model, wl, th, registered), wl)
                rows += result_rows.gap_rows(model, wl, long_g)
                g = short_g
            rows += result_rows.gap_rows(model, w, g)
        elif job == "labels":
            rows += result_rows.label_rows(model, w, compute.label_stats(w, th))
        else:
            raise ValueError(f"unknown job {job!r}")
    return rows


# Quiet models and small cohorts: a subject the job window is too small to decide is decided
# over the longer horizon (MODELMON_JOB_LONG_WINDOW_SECONDS, 24 h) ending at the same boundary
# instead of staying silent, when that horizon can decide it. Its rows carry the longer
# window's start, and `horizon_seconds` in their detail.


def _horizon(row: dict[str, Any], w: windows.MergedWindow) -> dict[str, Any]:
    row["horizon_seconds"] = (w.end - w.start).total_seconds()
    return row


def _too_small(report: dict[str, Any]) -> bool:
    cols = [*report["features"], *([report["prediction"]] if report["prediction"] else [])]
    return any(c.get("gate") == "min_support" for c in cols)


def _split_drift(short: dict[str, Any], long: dict[str, Any], wl: windows.MergedWindow
                 ) -> tuple[dict[str, Any], dict[str, Any]]:
    """(the short window's report without the columns the long one decides, the long one's
    report with only those columns)."""
    def decided_longer(s: dict[str, Any] | None, lg: dict[str, Any] | None) -> bool:
        return (s is not None and lg is not None and s.get("gate") == "min_support"
                and lg.get("gate") != "min_support")

    by_name = {f["feature"]: f for f in long["features"]}
    moved = [f["feature"] for f in short["features"]
             if decided_longer(f, by_name.get(f["feature"]))]
    pred = decided_longer(short["prediction"], long["prediction"])
    return ({**short, "features": [f for f in short["features"] if f["feature"] not in moved],
             "prediction": None if pred else short["prediction"]},
            {**long, "features": [_horizon(by_name[n], wl) for n in moved],
             "prediction": _horizon(long["prediction"], wl) if pred else None})


def _too_small_cohorts(report: dict[str, Any]) -> bool:
    return any(c.get("gate") == "min_n" for r in report.values() for c in r["cohorts"])


def _split_cohorts(short: dict[str, Any], long: dict[str, Any], wl: windows.MergedWindow
                   ) -> tuple[dict[str, Any], dict[str, Any]]:
    """Cohorts too small in the job window but decidable over the longer horizon move to
    the long window's report."""
    s_out: dict[str, Any] = {}
    l_out: dict[str, Any] = {}
    for key, r in short.items():
        lr = {c["cohort"]: c for c in long.get(key, {}).get("cohorts", [])}
        moved = [_horizon(lr[c["cohort"]], wl) for c in r["cohorts"]
                 if c.get("gate") == "min_n" and c["cohort"] in lr
                 and lr[c["cohort"]].get("gate") != "min_n"]
        names = {c["cohort"] for c in moved}
        s_out[key] = {**r, "cohorts": [c for c in r["cohorts"] if c["cohort"] not in names]}
        l_out[key] = {**long[key], "cohorts": moved}
    return s_out, l_out


def _too_small_gap(report: dict[str, Any]) -> bool:
    parts = [*([report["overall"]] if report["overall"] else []), *report["cohorts"]]
    return any(p.get("gate") == "min_n" for p in parts)


def _split_gap(short: dict[str, Any], long: dict[str, Any] | None, wl: windows.MergedWindow
               ) -> tuple[dict[str, Any], dict[str, Any]]:
    """The generalization gap, overall or of a cohort, too small to decide in the job window
    but decidable over the longer horizon moves to the long window's report."""
    def moves(s: dict[str, Any] | None, lg: dict[str, Any] | None) -> bool:
        return (s is not None and lg is not None and s.get("gate") == "min_n"
                and lg.get("gate") != "min_n")

    long = long or {"overall": None, "cohorts": []}
    overall = moves(short["overall"], long["overall"])
    by = {(c["cohort_key"], c["cohort"]): c for c in long["cohorts"]}
    moved = {k for c in short["cohorts"]
             if moves(c, by.get(k := (c["cohort_key"], c["cohort"])))}
    return ({"overall": None if overall else short["overall"],
             "cohorts": [c for c in short["cohorts"]
                         if (c["cohort_key"], c["cohort"]) not in moved]},
            {"overall": _horizon(long["overall"], wl) if overall else None,
             "cohorts": [_horizon(by[k], wl) for k in sorted(moved)]})


def _count(counts: dict[str, int], w: windows.MergedWindow) -> None:
    counts["predictions"] = counts.get("predictions", 0) + w.n
    counts["labeled"] = counts.get("labeled", 0) + w.outcome.labeled


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
            rows = compute_rows(job, conn, model, start, end, settings, now or started,
                                profiles or ProfileCache(), counts)
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
    except Exception as exc:  # noqa: BLE001 - a job never takes the service down
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


def maintain_summaries(engine: Engine, settings: Settings, now: datetime,
                       profiles: ProfileCache, models: list[ModelRow]) -> dict[str, int]:
    """Before the jobs: compact closed buckets, summarise rows stored before summaries
    existed, and summarise again the drift of buckets the due drift windows need whose
    summaries were built on another profile."""
    bucket = settings.job_interval_seconds
    out = {"compacted": windows.compact(engine, before=aligned_end(now, bucket),
                                           max_cohort_values=settings.summary_max_cohort_values),
           "backfilled_rows": 0, "resummarised_rows": 0}
    by_id = {m.id: m for m in models}
    with engine.connect() as conn:
        pending = store.pending_backfill(conn=conn)
    for model_id, version_id, before in pending:
        if model_id in by_id:
            with engine.connect() as conn:
                cp = profiles.get(conn, [version_id]).get(version_id)
            out["backfilled_rows"] += windows.backfill(engine, by_id[model_id], version_id,
                                                       before, cp, bucket) or 0
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
         stopping: Callable[[], bool] | None = None) -> dict[str, int]:
    """One scheduler tick: summary upkeep, then every due window of every job for every
    model. When ``stopping()`` turns true (the process is shutting down), no further window
    starts: the windows left are due again at the next start."""
    now = now or datetime.now(UTC)
    profiles = profiles or ProfileCache()
    counts: dict[str, int] = {}
    with engine.connect() as conn:
        models = [m for m, _ in registry.list_models(conn=conn)]
    try:
        maintain_summaries(engine, settings, now, profiles, models)
    except Exception:  # noqa: BLE001 - the jobs still run on what is there
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
