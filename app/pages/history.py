"""A score's history for the pages, read from the results the jobs stored, through the
history report's own function (GET /v1/models/{model}/history): the same points, never
recomputed; and what the pages draw from them."""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime, timedelta
from typing import Any

from markupsafe import Markup
from sqlalchemy import Connection

from app.evaluation import reports
from app.pages import charts
from app.pages.charts import Point
from app.settings import Settings

SPARK_WINDOWS = 24  # a sparkline: the last 24 windows the jobs computed
FEATURE_SPAN = timedelta(hours=24)  # a feature's page: the day before its window's end


def read(conn: Connection, settings: Settings, model: str, metric: str, *,
         version: str | None, start: datetime, end: datetime,
         subject: str | None = None) -> list[dict[str, Any]]:
    """Every stored point of ``metric`` with window_end in (start, end], oldest first, as
    the history report gives them (all its pages)."""
    feature = cohort = None
    if subject is not None:
        feature = cohort = subject
    out: list[dict[str, Any]] = []
    cursor = None
    while True:
        page = reports.history_report(conn, settings, model, metric, feature, cohort,
                                      version, start, end, cursor=cursor)
        out += page["points"]
        cursor = page["next_cursor"]
        if cursor is None:
            return out


def spark_start(settings: Settings, end: datetime) -> datetime:
    return end - timedelta(seconds=settings.job_interval_seconds * SPARK_WINDOWS)


def points(rows: list[dict[str, Any]]) -> list[Point]:
    return [Point(datetime.fromisoformat(r["window_end"]), r["value"], r["n"], r["decision"],
                  r["version"]) for r in rows]


def by_subject(rows: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        out[r["subject"]].append(r)
    return out


def version_starts(rows: list[dict[str, Any]]) -> dict[str, datetime]:
    """Each version's first window in ``rows`` (oldest first), where one began after the
    first window shown (a version present from the start began before it)."""
    first: dict[str, datetime] = {}
    for r in rows:
        if r["version"] is not None and r["version"] not in first:
            first[r["version"]] = datetime.fromisoformat(r["window_end"])
    if not first:
        return {}
    opening = min(first.values())
    return {v: t for v, t in first.items() if t > opening}


def sparklines(conn: Connection, settings: Settings, model: str, version: str,
               features: list[dict[str, Any]], end: datetime) -> None:
    """Each drift row's PSI over the last SPARK_WINDOWS stored windows up to ``end`` (one
    read for every feature), drawn with its warning line, in place under "spark"."""
    rows = by_subject(read(conn, settings, model, "feature_psi", version=version,
                           start=spark_start(settings, end), end=end))
    for f in features:
        values = [r["value"] for r in rows.get(f["feature"], [])][-SPARK_WINDOWS:]
        f["spark_values"] = values
        f["spark"] = charts.sparkline(values, f.get("thresholds", {}).get("psi_warning"))


def ece_series(conn: Connection, settings: Settings, model: str, version: str,
               end: datetime, lines: dict[str, float | None]
               ) -> tuple[list[dict[str, Any]], Markup]:
    """The version's stored ECE over the day before ``end``, and its chart."""
    rows = read(conn, settings, model, "calibration_ece", version=version,
                start=end - FEATURE_SPAN, end=end)
    return rows, charts.series(points(rows), lines, {})


LABEL_DELAY = ("label_delay_p50_seconds", "label_delay_p90_seconds")


def label_delay(conn: Connection, settings: Settings, model: str, version: str,
                start: datetime, end: datetime) -> dict[str, float | None] | None:
    """The label delay's quantiles the labels job stored for exactly the window (start, end]
    (its window is the calibration report's: both wait the model's label lag), by metric
    name; None where the job has stored no result for that window yet. Read, never
    recomputed: the KLL sketch behind them compacts at random past 200 labels, so only the
    stored figure is one answer per window."""
    found: dict[str, float | None] = {}
    for metric in LABEL_DELAY:
        for r in read(conn, settings, model, metric, version=version,
                      start=end - timedelta(microseconds=1), end=end):
            if (datetime.fromisoformat(r["window_start"]) == start
                    and datetime.fromisoformat(r["window_end"]) == end):
                found[metric] = r["value"]
    return found or None
