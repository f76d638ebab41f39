"""On-demand reports over any window, computed with the same code the jobs store; the
checks' typed results become the reports' JSON here (``to_dict()``), at the edge."""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Connection

from app.errors import Invalid, Problem, not_found
from app.evaluation import policy as model_policy
from app.evaluation import rollup, windows
from app.evaluation.catalogue import METRICS
from app.evaluation.checks.calibration import calibration
from app.evaluation.checks.cohorts import cohorts
from app.evaluation.checks.drift import drift
from app.evaluation.checks.embedding import embedding
from app.evaluation.checks.gap import generalization_gap
from app.evaluation.checks.multivariate import multivariate
from app.evaluation.checks.performance import performance
from app.evaluation.profiles import ProfileCache
from app.evaluation.references import reference_for
from app.evaluation.summaries import CompiledProfile
from app.evaluation.windows import aligned_end, whole_buckets
from app.settings import Settings
from app.storage import observations, registry, results
from app.storage import summaries as store
from app.storage.db import as_utc

# The dates a report or history parameter may name: from the Unix epoch (nothing stored is
# older) to before the year 3000, far from the calendar's end (9999-12-31), so a window's
# arithmetic (its length, widening to whole buckets, a time zone's offset) stays within it.
EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)
LATEST = datetime(3000, 1, 1, tzinfo=UTC)
MAX_ID = 2**63 - 1


def within_range(value: datetime, field: str) -> datetime:
    """``value`` in UTC (a naive one is UTC); 422 naming ``field`` outside [EARLIEST,
    LATEST)."""
    aware = value if value.tzinfo is not None else value.replace(tzinfo=UTC)
    if not EARLIEST <= aware < LATEST:
        raise Invalid("date_out_of_range",
                      f"{field} must lie from {EARLIEST.isoformat()} to before "
                      f"{LATEST.isoformat()}",
                      [Problem("date out of range", field=field)])
    return aware.astimezone(UTC)


@dataclass(frozen=True)
class Scope:
    model: registry.ModelRow
    versions: list[tuple[int, str]]  # (id, name)
    start: datetime
    end: datetime
    requested: tuple[datetime, datetime]


@dataclass(frozen=True)
class DriftInputs:
    """What a version's drift was computed from: its compiled profile (None without a
    reference) and the merged window."""

    profile: CompiledProfile | None
    window: windows.MergedWindow


def window(settings: Settings, start: datetime | None, end: datetime | None,
           now: datetime | None = None, lag_seconds: float = 0.0) -> tuple[datetime, datetime]:
    """The requested window, defaulting to the latest one the jobs computed (not yet widened
    to whole buckets)."""
    start = None if start is None else within_range(start, "start")
    end = None if end is None else within_range(end, "end")
    length = timedelta(seconds=settings.job_window_seconds)
    if end is None:
        end = aligned_end(now or datetime.now(UTC), settings.job_interval_seconds) \
            - timedelta(seconds=lag_seconds)
        if start is not None and start >= end:
            end = start + length
    if start is None:
        start = end - length
    if start >= end:
        raise Invalid("invalid_window", "start must be before end",
                      [Problem("start is not before end", field="start")])
    return start, end


def scope(conn: Connection, settings: Settings, model_name: str, version: str | None,
          start: datetime | None, end: datetime | None, *, needs_labels: bool = False) -> Scope:
    model = registry.require_model(conn=conn, name=model_name)
    lag = model_policy.effective(settings, model.policy).label_lag_seconds
    asked = window(settings, start, end, lag_seconds=lag if needs_labels else 0.0)
    s, e = rollup.covering(conn, model.id, *whole_buckets(*asked,
                                                          settings.job_interval_seconds))
    if version is not None:
        chosen = [(registry.require_version(conn=conn, model=model, version=version).id,
                   version)]
    else:
        names = {v.id: v.version for v in registry.list_versions(conn=conn, model_id=model.id)}
        chosen = [(i, names[i]) for i in store.versions_in_window(conn=conn, model_id=model.id,
                                                                  start=s, end=e)]
    return Scope(model, chosen, s, e, asked)


def _envelope(conn: Connection, settings: Settings, sc: Scope, versions: list[dict[str, Any]],
              pol: model_policy.EffectivePolicy, labelled: bool = False) -> dict[str, Any]:
    """The report, with the model's effective policy it applied (each row also states the
    thresholds of its own decision); an empty one says when data will appear (``labelled``:
    the report counts labelled predictions only)."""
    empty = all(v.get("n", 0) == 0 for v in versions)
    return {"model": sc.model.name, "task": sc.model.task, "window_start": sc.start.isoformat(),
            "window_end": sc.end.isoformat(),
            "requested_start": sc.requested[0].isoformat(),
            "requested_end": sc.requested[1].isoformat(), "versions": versions,
            "empty": empty, **(_when_empty(conn, settings, sc, labelled=labelled)
                                if empty else {}),
            "policy": pol.to_dict()}


def _when_empty(conn: Connection, settings: Settings, sc: Scope,
                now: datetime | None = None, labelled: bool = False) -> dict[str, Any]:
    """Beside an empty report: the model's latest stored prediction, when the jobs next
    tick (the next bucket boundary; a tick fires just after it) and what to do meanwhile."""
    interval = settings.job_interval_seconds
    now = now or datetime.now(UTC)
    next_tick = aligned_end(now, interval) + timedelta(seconds=interval)
    latest = observations.latest_prediction(conn=conn, model_id=sc.model.id)
    if latest is None:
        note = ("no predictions are stored for this model yet: send some (POST "
                "/v1/predictions). The default window ends at the latest bucket boundary "
                f"(every {interval:g} s), so they appear once their bucket closes")
    elif latest >= sc.end:
        bucket = aligned_end(latest, interval)
        closes = bucket + timedelta(seconds=interval)
        # the window to ask for in Z form: '+' in a query string reads as a space
        z = [t.isoformat().replace("+00:00", "Z") for t in (bucket, closes)]
        note = (f"no traffic in this window; the latest prediction, at {latest.isoformat()}, "
                f"is in the bucket that closes at {closes.isoformat()}: the default window "
                f"covers it from then, and the job tick at or after it (next: "
                f"{next_tick.isoformat()}) exports its metrics and alerts. To see it now, ask "
                f"for a window holding it: ?start={z[0]}&end={z[1]}")
    elif latest < sc.start:
        note = (f"no traffic in this window; the latest prediction is at {latest.isoformat()}, "
                "before it: nothing was sent since. Ask for an earlier window with start and "
                "end")
    elif labelled:
        note = (f"predictions are stored in this window (the latest at {latest.isoformat()}) "
                "but none of them has a label yet, and this report counts labelled "
                "predictions only: send their labels (POST /v1/labels, by prediction_id, or "
                "inline as 'label'); the drift report's label coverage says how many came")
    else:
        note = (f"the latest prediction, at {latest.isoformat()}, is in this window but not "
                f"summarised yet; the job tick at {next_tick.isoformat()} summarises it")
    return {"latest_prediction": None if latest is None else latest.isoformat(),
            "next_tick": next_tick.isoformat(), "note": note}


# Merged windows kept for the other reports of one snapshot, by (version id, start, end): a
# window's outcome sums do not depend on the profile, so calibration and cohorts can read the
# window drift merged (a page shows the three reports of one window on one snapshot).
Merged = dict[tuple[int, datetime, datetime], windows.MergedWindow]


def _merge(conn: Connection, settings: Settings, sc: Scope, vid: int,
           cp: Any = None, merged: Merged | None = None) -> windows.MergedWindow:
    key = (vid, sc.start, sc.end)
    hit = None if merged is None else merged.get(key)
    # a window merged with a profile holds the outcome sums too, and serves the same profile
    # again (a page's drift and performance reports: one merge, not two)
    if hit is not None and (cp is None or (hit.drift is not None
                                           and hit.drift.profile_key == cp.key)):
        return hit
    w = windows.merge(conn, sc.model, vid, sc.start, sc.end,
                      bucket_seconds=settings.job_interval_seconds, cp=cp,
                      max_cohort_values=settings.summary_max_cohort_values)
    if merged is not None:
        merged[key] = w
    return w


def outcome_counts(conn: Connection, settings: Settings, sc: Scope,
                   merged: Merged | None = None) -> dict[str, tuple[int, int]]:
    """Per version in the scope: the window's predictions and labeled predictions, from the
    merge the reports read (the drift report's ``n`` is the first; the calibration report's
    label coverage is the second over the first), without computing any check."""
    out = {}
    for vid, name in sc.versions:
        w = _merge(conn, settings, sc, vid, None, merged)
        out[name] = (w.n, w.outcome.labeled)
    return out


def drift_report(conn: Connection, settings: Settings, sc: Scope,
                 profiles: ProfileCache) -> dict[str, Any]:
    return drift_report_with_windows(conn, settings, sc, profiles)[0]


def drift_report_with_windows(conn: Connection, settings: Settings, sc: Scope,
                              profiles: ProfileCache, merged: Merged | None = None
                              ) -> tuple[dict[str, Any], dict[str, DriftInputs]]:
    """The drift report, and per version the profile and merged window it was computed
    from (what a page draws beyond the report's numbers: the ECDFs behind KS D)."""
    pol = model_policy.effective(settings, sc.model.policy)
    out = []
    inputs: dict[str, DriftInputs] = {}
    now = datetime.now(UTC)
    for vid, name in sc.versions:
        ref = reference_for(conn=conn, model=sc.model, version_id=vid, settings=settings,
                            now=now, profiles=profiles)
        w = _merge(conn, settings, sc, vid, ref.profile, merged)
        inputs[name] = DriftInputs(ref.profile, w)
        entry: dict[str, Any] = {"version": name, "n": w.n, "reference": ref.info,
                                 "summaries": w.summary_info()}
        if ref.profile is None:
            entry.update(features=[], prediction=None)
        else:
            entry.update(drift(w, ref.profile, pol.thresholds, pol.features,
                               registry.feature_importance(conn=conn, version_id=vid)
                               ).to_dict(),
                         multivariate=multivariate(w, ref.profile, pol.thresholds).to_dict(),
                         embeddings=embedding(w, ref.profile, pol.thresholds).to_dict())
        out.append(entry)
    return _envelope(conn, settings, sc, out, pol), inputs


def performance_report(conn: Connection, settings: Settings, sc: Scope,
                       profiles: ProfileCache, merged: Merged | None = None
                       ) -> dict[str, Any]:
    """The performance estimated from the scores alone (CBPE), per version, against its
    reference's realized values; the realized accuracy beside it where labels came."""
    pol = model_policy.effective(settings, sc.model.policy)
    out = []
    now = datetime.now(UTC)
    for vid, name in sc.versions:
        ref = reference_for(conn=conn, model=sc.model, version_id=vid, settings=settings,
                            now=now, profiles=profiles)
        w = _merge(conn, settings, sc, vid, ref.profile, merged)
        entry: dict[str, Any] = {"version": name, "predictions": w.n, "reference": ref.info}
        if ref.profile is None:
            entry.update(status="not_applicable", decision="ok", n=w.n,
                         reason="the version has no reference")
        else:
            entry.update(performance(sc.model, w, ref.profile, pol.thresholds).to_dict())
            entry["reference_realized"] = ref.profile.cbpe_realized
        out.append(entry)
    return _envelope(conn, settings, sc, out, pol)


def calibration_report(conn: Connection, settings: Settings, sc: Scope,
                       bins: int | None, merged: Merged | None = None) -> dict[str, Any]:
    pol = model_policy.effective(settings, sc.model.policy)
    out = []
    for vid, name in sc.versions:
        w = _merge(conn, settings, sc, vid, merged=merged)
        out.append({"version": name, "predictions": w.n,
                    **calibration(sc.model, w, pol.thresholds, bins).to_dict()})
    return _envelope(conn, settings, sc, out, pol, labelled=True)


def cohorts_report(conn: Connection, settings: Settings, sc: Scope,
                   merged: Merged | None = None) -> dict[str, Any]:
    pol = model_policy.effective(settings, sc.model.policy)
    training = registry.training_blocks(conn=conn, model_id=sc.model.id)
    out = []
    for vid, name in sc.versions:
        w = _merge(conn, settings, sc, vid, merged=merged)
        gap = generalization_gap(sc.model, w, pol.thresholds, training.get(vid, {}))
        out.append({"version": name, "n": w.n, "cohort_keys": cohorts(
            sc.model, w, pol.thresholds, pol.cohort_keys).to_dict(),
                    "generalization_gap": None if gap is None else gap.to_dict()})
    return _envelope(conn, settings, sc, out, pol)


def history_report(conn: Connection, settings: Settings, model_name: str, metric: str,
                   feature: str | None, cohort: str | None, version: str | None,
                   start: datetime | None, end: datetime | None, limit: int = 10_000,
                   cursor: str | None = None) -> dict[str, Any]:
    """One page of a metric's stored results; ``next_cursor`` (null on the last page) asks
    for the next one."""
    if metric not in METRICS:
        raise not_found("unknown_metric", f"unknown metric {metric[:64]!r}; one of: "
                        + ", ".join(sorted(METRICS)), "metric")
    after = _cursor_key(cursor) if cursor is not None else None
    model = registry.require_model(conn=conn, name=model_name)
    s = EARLIEST if start is None else within_range(start, "start")
    e = datetime.now(UTC) + timedelta(days=1) if end is None else within_range(end, "end")
    if s >= e:
        raise Invalid("invalid_window", "start must be before end",
                      [Problem("start is not before end", field="start")])
    names = {v.id: v.version for v in registry.list_versions(conn=conn, model_id=model.id)}
    version_id = None if version is None else registry.require_version(
        conn=conn, model=model, version=version).id
    subject = feature if METRICS[metric].subject == "feature" else cohort
    rows = results.history(conn=conn, model_id=model.id, metric=metric, subject=subject,
                           version_id=version_id, start=s, end=e, limit=limit + 1,
                           after=after)
    more = len(rows) > limit
    rows = rows[:limit]
    last = rows[-1] if more else None
    return {
        "model": model.name, "metric": metric,
        "points": [{"version": names.get(r.version_id), "subject": r.subject,
                    "window_start": as_utc(r.window_start).isoformat(),
                    "window_end": as_utc(r.window_end).isoformat(), "n": r.n, "value": r.value,
                    "decision": r.decision, "method": r.method} for r in rows],
        "next_cursor": None if last is None else _cursor_of(
            (as_utc(last.window_end), last.subject, last.version_id, last.id)),
    }


def _cursor_of(key: tuple[datetime, str, int, int]) -> str:
    raw = json.dumps([key[0].isoformat(), key[1], key[2], key[3]], separators=(",", ":"))
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def _cursor_key(cursor: str) -> tuple[datetime, str, int, int]:
    """The key a cursor stands for; 422 for anything that is not a cursor this service
    gave out (never echoed)."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        end, subject, version_id, row_id = json.loads(raw)
        ts = datetime.fromisoformat(end)
        if (ts.tzinfo is None or not isinstance(subject, str)
                or type(version_id) is not int or type(row_id) is not int
                or not (0 <= version_id <= MAX_ID and 0 <= row_id <= MAX_ID)):
            raise ValueError
        return within_range(ts, "cursor"), subject, version_id, row_id
    except (ValueError, TypeError, UnicodeDecodeError, Invalid):
        raise Invalid("invalid_cursor", "cursor is not one this service gave out",
                      [Problem("not a next_cursor from a previous page", field="cursor")]
                      ) from None
