"""On-demand reports over any window, computed with the same code the jobs store."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Connection

from app.errors import ApiError, Problem, not_found
from app.evaluation import compute, windows
from app.evaluation.catalogue import METRICS
from app.evaluation.profiles import ProfileCache
from app.evaluation.references import reference_for
from app.evaluation.windows import aligned_end, whole_buckets
from app.settings import Settings
from app.storage import registry, results
from app.storage import summaries as store
from app.storage.db import as_utc


@dataclass(frozen=True)
class Scope:
    model: registry.ModelRow
    versions: list[tuple[int, str]]  # (id, name)
    start: datetime
    end: datetime
    requested: tuple[datetime, datetime]


def window(settings: Settings, start: datetime | None, end: datetime | None,
           now: datetime | None = None, lag_seconds: float = 0.0) -> tuple[datetime, datetime]:
    """The requested window, defaulting to the latest one the jobs computed (not yet widened
    to whole buckets)."""
    start, end = as_utc(start), as_utc(end)
    length = timedelta(seconds=settings.job_window_seconds)
    if end is None:
        end = aligned_end(now or datetime.now(UTC), settings.job_interval_seconds) \
            - timedelta(seconds=lag_seconds)
        if start is not None and start >= end:
            end = start + length
    if start is None:
        start = end - length
    if start >= end:
        raise ApiError(422, "invalid_window", "start must be before end",
                       [Problem("start is not before end", field="start")])
    return start, end


def scope(conn: Connection, settings: Settings, model_name: str, version: str | None,
          start: datetime | None, end: datetime | None, *, needs_labels: bool = False) -> Scope:
    model = registry.require_model(conn=conn, name=model_name)
    asked = window(settings, start, end,
                   lag_seconds=settings.label_lag_seconds if needs_labels else 0.0)
    s, e = whole_buckets(*asked, settings.job_interval_seconds)
    if version is not None:
        chosen = [(registry.require_version(conn=conn, model=model, version=version).id,
                   version)]
    else:
        names = {v.id: v.version for v in registry.list_versions(conn=conn, model_id=model.id)}
        chosen = [(i, names[i]) for i in store.versions_in_window(conn=conn, model_id=model.id,
                                                                  start=s, end=e)]
    return Scope(model, chosen, s, e, asked)


def _envelope(sc: Scope, versions: list[dict[str, Any]]) -> dict[str, Any]:
    return {"model": sc.model.name, "task": sc.model.task, "window_start": sc.start.isoformat(),
            "window_end": sc.end.isoformat(),
            "requested_start": sc.requested[0].isoformat(),
            "requested_end": sc.requested[1].isoformat(), "versions": versions,
            "empty": all(v.get("n", 0) == 0 for v in versions)}


def _merge(conn: Connection, settings: Settings, sc: Scope, vid: int,
           cp: Any = None) -> windows.MergedWindow:
    return windows.merge(conn, sc.model, vid, sc.start, sc.end,
                         bucket_seconds=settings.job_interval_seconds, cp=cp,
                         max_cohort_values=settings.summary_max_cohort_values)


def drift_report(conn: Connection, settings: Settings, sc: Scope,
                 profiles: ProfileCache) -> dict[str, Any]:
    th = compute.Thresholds.from_settings(settings)
    out = []
    now = datetime.now(UTC)
    for vid, name in sc.versions:
        ref = reference_for(conn=conn, model=sc.model, version_id=vid, settings=settings,
                            now=now, profiles=profiles)
        w = _merge(conn, settings, sc, vid, ref.profile)
        entry: dict[str, Any] = {"version": name, "n": w.n, "reference": ref.info,
                                 "summaries": w.summary_info()}
        if ref.profile is None:
            entry.update(features=[], prediction=None)
        else:
            entry.update(compute.drift(w, ref.profile, th))
        out.append(entry)
    return _envelope(sc, out)


def calibration_report(conn: Connection, settings: Settings, sc: Scope,
                       bins: int | None) -> dict[str, Any]:
    th = compute.Thresholds.from_settings(settings)
    out = []
    for vid, name in sc.versions:
        w = _merge(conn, settings, sc, vid)
        out.append({"version": name, "predictions": w.n,
                    **compute.calibration(sc.model, w, th, bins)})
    return _envelope(sc, out)


def cohorts_report(conn: Connection, settings: Settings, sc: Scope) -> dict[str, Any]:
    th = compute.Thresholds.from_settings(settings)
    out = []
    for vid, name in sc.versions:
        w = _merge(conn, settings, sc, vid)
        out.append({"version": name, "n": w.n, "cohort_keys": compute.cohorts(sc.model, w, th)})
    return _envelope(sc, out)


def history_report(conn: Connection, settings: Settings, model_name: str, metric: str,
                   feature: str | None, cohort: str | None, version: str | None,
                   start: datetime | None, end: datetime | None) -> dict[str, Any]:
    if metric not in METRICS:
        raise not_found("unknown_metric", f"unknown metric {metric[:64]!r}; one of: "
                        + ", ".join(sorted(METRICS)), "metric")
    model = registry.require_model(conn=conn, name=model_name)
    s = as_utc(start) or datetime(1970, 1, 1, tzinfo=UTC)
    e = as_utc(end) or datetime.now(UTC) + timedelta(days=1)
    if s >= e:
        raise ApiError(422, "invalid_window", "start must be before end",
                       [Problem("start is not before end", field="start")])
    names = {v.id: v.version for v in registry.list_versions(conn=conn, model_id=model.id)}
    version_id = None if version is None else registry.require_version(
        conn=conn, model=model, version=version).id
    subject = feature if METRICS[metric].subject == "feature" else cohort
    rows = results.history(conn=conn, model_id=model.id, metric=metric, subject=subject,
                           version_id=version_id, start=s, end=e)
    return {
        "model": model.name, "metric": metric,
        "points": [{"version": names.get(r.version_id), "subject": r.subject,
                    "window_start": as_utc(r.window_start).isoformat(),
                    "window_end": as_utc(r.window_end).isoformat(), "n": r.n, "value": r.value,
                    "decision": r.decision, "method": r.method} for r in rows],
    }
