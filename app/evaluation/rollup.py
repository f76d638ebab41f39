"""Roll-ups: old bucket summaries merged into one row per hour, older ones per day.

Summaries add up exactly, so the rows of one (version, kind, profile, origin) inside an
aligned hour (or UTC day) merge into one row covering it (``bucket_seconds`` 3600 or
86,400), with the same merge compaction uses (app/evaluation/fold.py ``merged_payload``).
Storage per model-day then stays bounded, and a 30-day window reads tens of rows per kind,
not thousands.

What is rolled up: buckets older than MODELMON_SUMMARY_ROLLUP_HOURLY_AFTER_SECONDS (hours)
and MODELMON_SUMMARY_ROLLUP_DAILY_AFTER_SECONDS (days), and never a bucket a job or the
summary audit still reads: per model, the age is at least ``reach_seconds`` (the longer of
the job window and the long horizon, the catch-up windows, the model's label lag and the
audit's lookback). A job's window, which ends at any bucket boundary, therefore never meets
a rolled-up row; a report does, and is widened to whole rolled-up spans (``covering``), the
bounds it used given back as ``window_start`` / ``window_end``.

Rows that arrive later for a rolled-up span (a late label's pair, a prediction with an old
timestamp, an imported summary) are stored as usual, read with the span, and merged into it
by the next roll-up. Each span is merged in its own transaction: the rows it takes are
deleted (DELETE ... RETURNING) and the sum inserted together, so a crash leaves the rows as
they were and a concurrent roll-up or compaction cannot count a row twice.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Engine

from app.evaluation.fold import merged_payload
from app.evaluation.policy import effective
from app.evaluation.windows import DAY, HOUR, aligned_end, floor_to
from app.settings import Settings
from app.storage import locks
from app.storage import summaries as store
from app.storage.summaries import OUTCOME, SummaryRow

log = logging.getLogger("modelmon.summaries")


def reach_seconds(settings: Settings, label_lag_seconds: float) -> float:
    """Seconds before the latest bucket boundary that a model's jobs and the summary audit
    read back."""
    return (max(settings.job_window_seconds, settings.job_long_window_seconds)
            + settings.job_interval_seconds * settings.job_catchup_windows
            + label_lag_seconds + settings.summary_audit_lookback_seconds)


def levels(settings: Settings, label_lag_seconds: float) -> list[tuple[int, float]]:
    """(span, age) of each roll-up in use: hours, then days. A span that is not a whole
    multiple (at least 2) of the job interval is not used, nor one whose age setting is 0."""
    step = settings.job_interval_seconds
    reach = reach_seconds(settings, label_lag_seconds)
    out = []
    for span, age in ((HOUR, settings.summary_rollup_hourly_after_seconds),
                      (DAY, settings.summary_rollup_daily_after_seconds)):
        ratio = span / step
        if age > 0 and ratio >= 2 and abs(ratio - round(ratio)) < 1e-9:
            out.append((span, max(age, reach)))
    return out


def roll_cell(conn: Connection, model_id: int, version_id: int, start: datetime, span: int,
              kind: str, profile_key: str, origin: str, max_cohort_values: int) -> int:
    """Merge the rows of one (version, kind, profile, origin) starting in [start, start +
    span) into one row covering the span, in ``conn``'s transaction. Returns the rows
    merged (0: none left, another transaction took them)."""
    taken = store.take_span(conn=conn, model_id=model_id, version_id=version_id,
                            start=start, end=start + timedelta(seconds=span), kind=kind,
                            profile_key=profile_key, origin=origin, max_span=span)
    if not taken:
        return 0
    payload = merged_payload(kind, profile_key, (p for _, p in taken),
                             max_cohort_values if kind == OUTCOME else None)
    store.append(conn=conn, model_id=model_id, rows=[SummaryRow(
        version_id, start, kind, profile_key, sum(n for n, _ in taken), payload, origin,
        span)])
    return len(taken)


@dataclass
class Rolled:
    spans: int = 0  # rows written, each covering an hour or a day
    rows: int = 0  # rows merged into them


def rollup(engine: Engine, model: Any, settings: Settings, now: datetime,
           limit: int) -> Rolled:
    """Roll up at most ``limit`` spans of the model's oldest summaries not rolled up yet,
    one transaction each, under the model's summary upkeep lock (a span another replica is
    rolling up is left to it)."""
    out = Rolled()
    lag = effective(settings, model.policy).label_lag_seconds
    boundary = aligned_end(now, settings.job_interval_seconds)
    for span, age in levels(settings, lag):
        before = floor_to(boundary - timedelta(seconds=age), span)
        with engine.connect() as conn:
            found = store.rollup_candidates(conn=conn, model_id=model.id, before=before,
                                            span=span, limit=max(0, limit - out.spans) * 12)
        cells = sorted({(v, floor_to(b, span), k, p, o) for v, b, k, p, o in found},
                       key=lambda c: (c[1], c[0], c[2], c[3], c[4]))
        for version_id, start, kind, key, origin in cells[:max(0, limit - out.spans)]:
            with engine.begin() as conn:
                if not locks.try_hold(conn, locks.SUMMARY_UPKEEP, model.id):
                    return out
                merged = roll_cell(conn, model.id, version_id, start, span, kind, key,
                                   origin, settings.summary_max_cohort_values)
            if merged:
                out.spans += 1
                out.rows += merged
    if out.spans:
        log.info("summaries of model %s rolled up: %d rows into %d spans", model.name,
                 out.rows, out.spans)
    return out


def covering(conn: Connection, model_id: int, start: datetime, end: datetime
             ) -> tuple[datetime, datetime]:
    """[start, end) (already whole buckets) widened to the rolled-up spans it cuts through:
    a row covering a day is read whole or not at all."""
    for span in (DAY, HOUR):
        lo = floor_to(start, span)
        if lo != start and store.spanning(conn=conn, model_id=model_id, at=lo, span=span):
            start = lo
        hi = floor_to(end, span)
        if hi != end and store.spanning(conn=conn, model_id=model_id, at=hi, span=span):
            end = hi + timedelta(seconds=span)
    return start, end
