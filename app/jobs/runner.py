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
import math
import os
import socket
from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Engine, text
from sqlalchemy.exc import IntegrityError

from app.evaluation import compute
from app.evaluation.references import reference_for
from app.settings import Settings
from app.storage import observations as obs
from app.storage import registry, results
from app.storage.registry import ModelRow

log = logging.getLogger("modelmon.jobs")

WINDOW_JOBS = ("drift", "calibration", "cohorts", "labels")
# Jobs that need ground truth: they evaluate the window that ended `label_lag_seconds` ago.
LABEL_JOBS = ("calibration", "cohorts", "labels")
JOB_CODES = {"drift": 1, "calibration": 2, "cohorts": 3, "labels": 4, "retention": 5}
WORKER = f"{socket.gethostname()}:{os.getpid()}"

Row = dict[str, Any]


def aligned_end(now: datetime, interval_seconds: float) -> datetime:
    """The most recent window boundary: every replica computes the same one."""
    ts = math.floor(now.timestamp() / interval_seconds) * interval_seconds
    return datetime.fromtimestamp(ts, UTC)


def windows_due(now: datetime, settings: Settings,
                last_end: datetime | None) -> list[tuple[datetime, datetime]]:
    """Windows ending at the latest boundaries not yet computed, oldest first, at most
    ``job_catchup_windows`` of them."""
    step = timedelta(seconds=settings.job_interval_seconds)
    length = timedelta(seconds=settings.job_window_seconds)
    end = aligned_end(now, settings.job_interval_seconds)
    ends = [end - k * step for k in range(settings.job_catchup_windows)]
    return [(e - length, e) for e in reversed(ends) if last_end is None or e > last_end]


def _row(job: str, model: ModelRow, version_id: int, metric: str, subject: str,
         start: datetime, end: datetime, n: int, value: float | None, decision: str,
         method: str, detail: dict[str, Any] | None = None) -> Row:
    return {"job": job, "model_id": model.id, "version_id": version_id, "metric": metric,
            "subject": subject, "window_start": start, "window_end": end, "n": n,
            "value": value, "decision": decision, "method": method, "detail": detail,
            "computed_at": datetime.now(UTC)}


def drift_rows(model: ModelRow, w: obs.Window, report: dict[str, Any],
               reference: dict[str, Any]) -> list[Row]:
    ref = reference.get("source", "none")
    psi_method = f"psi eps=1e-4 ref={ref}"
    ks_method = f"ks_2samp two-sided, BH across features, ref={ref} sample"
    rows: list[Row] = []
    for f in report["features"]:
        args = (model, w.version_id)
        rows.append(_row("drift", *args, "feature_psi", f["feature"], w.start, w.end,
                         f["n_current"], f["psi"], f["decision"], psi_method,
                         {"band": f["psi_band"], "reference_counts": f["reference_counts"],
                          "current_counts": f["current_counts"], "bins": f["bins"]}))
        rows.append(_row("drift", *args, "feature_missing_ratio", f["feature"], w.start, w.end,
                         f["n_current"], f["missing_rate"], "ok", "share of nulls", None))
        if f["type"] == "numeric":
            rows.append(_row("drift", *args, "feature_ks_statistic", f["feature"], w.start,
                             w.end, f["n_current"], f["ks_statistic"], f["decision"], ks_method,
                             {"pvalue": f["ks_pvalue"],
                              "pvalue_adjusted": f["ks_pvalue_adjusted"]}))
    p = report["prediction"]
    if p is not None:
        rows.append(_row("drift", model, w.version_id, "prediction_psi", "", w.start, w.end,
                         p["n_current"], p["psi"], p["decision"], psi_method,
                         {"band": p["psi_band"], "reference_counts": p["reference_counts"],
                          "current_counts": p["current_counts"], "bins": p["bins"]}))
        if p["type"] == "numeric":
            rows.append(_row("drift", model, w.version_id, "prediction_ks_statistic", "",
                             w.start, w.end, p["n_current"], p["ks_statistic"], p["decision"],
                             ks_method, {"pvalue": p["ks_pvalue"]}))
    return rows


def calibration_rows(model: ModelRow, w: obs.Window, r: dict[str, Any]) -> list[Row]:
    if r.get("status") == "not_applicable":
        return []
    method = f"equal-width {r['n_bins']} bins, {r['kind']}"
    detail = {"bins": r["bins"], "status": r["status"], "reason": r["reason"]}
    return [
        _row("calibration", model, w.version_id, metric, "", w.start, w.end, r["n"], r[key],
             r["decision"], method, detail if metric == "calibration_ece" else None)
        for metric, key in (("calibration_ece", "ece"), ("calibration_mce", "mce"),
                            ("calibration_brier", "brier"))
    ]


def cohort_rows(model: ModelRow, w: obs.Window, report: dict[str, Any]) -> list[Row]:
    rows: list[Row] = []
    for key, r in report.items():
        overall = r.get("overall") or {}
        regression = r["task"] == "regression"
        if key == model.cohort_keys[0] and overall:
            metric, value = (("error_mae", overall.get("mae")) if regression
                             else ("error_ratio", overall.get("error_rate")))
            rows.append(_row("cohorts", model, w.version_id, metric, "", w.start, w.end,
                             overall.get("n", 0), value, "ok", f"{r['task']} overall", None))
        for c in r["cohorts"]:
            subject = f"{key}={'' if c['cohort'] is None else c['cohort']}"
            detail = {k: c.get(k) for k in ("ci_low", "ci_high", "decidable", "rmse",
                                            "delta_error_rate", "delta_mae", "delta_rmse")}
            metric, value = (("cohort_mae", c.get("mae")) if regression
                             else ("cohort_error_ratio", c.get("error_rate")))
            rows.append(_row("cohorts", model, w.version_id, metric, subject, w.start, w.end,
                             c["n"], value, c["decision"],
                             "Wilson 95% interval" if not regression else "MAE", detail))
    return rows


def label_rows(model: ModelRow, w: obs.Window, r: dict[str, Any]) -> list[Row]:
    return [
        _row("labels", model, w.version_id, "label_coverage", "", w.start, w.end, r["n"],
             r["label_coverage"], r["decision"], "labeled / predictions in window", None),
        _row("labels", model, w.version_id, "label_delay_p50_seconds", "", w.start, w.end,
             r["labeled"], r["label_delay_p50_seconds"], "ok", "median label - prediction time",
             None),
        _row("labels", model, w.version_id, "label_delay_p90_seconds", "", w.start, w.end,
             r["labeled"], r["label_delay_p90_seconds"], "ok", "p90 label - prediction time",
             None),
    ]


def compute_rows(job: str, conn: Connection, model: ModelRow, start: datetime, end: datetime,
                 settings: Settings, now: datetime) -> list[Row]:
    th = compute.Thresholds.from_settings(settings)
    if job in LABEL_JOBS and settings.label_lag_seconds:
        lag = timedelta(seconds=settings.label_lag_seconds)
        start, end = start - lag, end - lag
    rows: list[Row] = []
    for version_id in obs.versions_in_window(conn=conn, model_id=model.id, start=start, end=end):
        w = obs.load_window(conn=conn, model=model, version_id=version_id, start=start, end=end,
                            limit=settings.job_max_window_rows)
        if job == "drift":
            profile, info = reference_for(conn=conn, model=model, version_id=version_id,
                                          settings=settings, now=now, store_baseline=True)
            if profile is not None:
                rows += drift_rows(model, w, compute.drift(model, w, profile, th), info)
        elif job == "calibration":
            rows += calibration_rows(model, w, compute.calibration(model, w, th))
        elif job == "cohorts":
            if model.cohort_keys:
                rows += cohort_rows(model, w, compute.cohorts(model, w, th))
        elif job == "labels":
            rows += label_rows(model, w, compute.label_stats(w, th))
        else:
            raise ValueError(f"unknown job {job!r}")
    return rows


def run_window(engine: Engine, job: str, model: ModelRow, start: datetime, end: datetime,
               settings: Settings, *, now: datetime | None = None,
               on_done: Callable[[str, str, float], None] | None = None) -> str:
    """Compute one window. Returns success, skipped (done elsewhere), locked (being done
    elsewhere) or failure (recorded; the window is retried on the next tick)."""
    started = datetime.now(UTC)
    outcome = "failure"
    try:
        with engine.begin() as conn:
            if conn.dialect.name == "postgresql":
                got = conn.execute(text("SELECT pg_try_advisory_xact_lock(:j, :m)"),
                                   {"j": JOB_CODES[job], "m": model.id}).scalar_one()
                if not got:
                    outcome = "locked"
                    return outcome
            if results.success_exists(conn=conn, job=job, model_id=model.id, window_end=end):
                outcome = "skipped"
                return outcome
            rows = compute_rows(job, conn, model, start, end, settings, now or started)
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
        if on_done is not None:
            on_done(job, outcome, (datetime.now(UTC) - started).total_seconds())


def tick(engine: Engine, settings: Settings, *, now: datetime | None = None,
         jobs: Iterable[str] = WINDOW_JOBS,
         on_done: Callable[[str, str, float], None] | None = None) -> dict[str, int]:
    """One scheduler tick: every due window of every job for every model."""
    now = now or datetime.now(UTC)
    counts: dict[str, int] = {}
    with engine.connect() as conn:
        models = [m for m, _ in registry.list_models(conn=conn)]
    for model in models:
        for job in jobs:
            with engine.connect() as conn:
                last = results.last_success_end(conn=conn, job=job, model_id=model.id)
            for start, end in windows_due(now, settings, last):
                outcome = run_window(engine, job, model, start, end, settings, now=now,
                                     on_done=on_done)
                counts[outcome] = counts.get(outcome, 0) + 1
    return counts
