"""A feature's page: its drift row of the drift report, the reference against the window per
bin, both ECDFs with the point where KS D is attained (from the window the report merged),
and its PSI over the stored windows with the threshold band, n per window and the versions'
starts marked. An embedding feature's page shows what its check decides on instead: the
embedding entry of the same drift report (effect, p-value, directions kept, the share of
variance outside them, the lines at the window's n) and its stored effect over time with
the policy's lines, p-value and n per window."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from markupsafe import Markup
from sqlalchemy import Connection

from app.errors import not_found
from app.evaluation import reports
from app.evaluation.checks.drift import column_curves
from app.evaluation.profiles import ProfileCache
from app.monitoring import KsCurves
from app.pages import charts, history, svg
from app.pages.views import Window
from app.settings import Settings


@dataclass
class FeatureView:
    model: str
    version: str
    feature: str
    window_start: str
    window_end: str
    row: dict[str, Any] | None
    reason: str = ""
    bins: list[dict[str, Any]] = field(default_factory=list)
    histogram: Markup = Markup("")
    curves: KsCurves | None = None
    ecdf: Markup = Markup("")
    lines: dict[str, float | None] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)
    history_start: str = ""
    series: Markup = Markup("")
    starts: dict[str, datetime] = field(default_factory=dict)
    # an embedding feature: its entry of the drift report's ``embeddings`` (None for another
    # feature, or where the version has no reference) and the policy's lines
    embedding: dict[str, Any] | None = None
    kind: str = ""


def bin_rows(row: dict[str, Any]) -> list[dict[str, Any]]:
    """Per bin: the reference's count and share against the window's."""
    ref, cur = row["reference_counts"], row["current_counts"]
    nr, nc = sum(ref), sum(cur)
    return [{"bin": b, "reference": r, "reference_share": r / nr if nr else None,
             "current": c, "current_share": c / nc if nc else None}
            for b, r, c in zip(row["bins"], ref, cur, strict=True)]


def _drift(conn: Connection, settings: Settings, profiles: ProfileCache, model: str,
           version: str, feature: str, w: Window) -> tuple[FeatureView, KsCurves | None]:
    """The feature's row of the drift report, and the ECDFs behind its KS D."""
    sc = reports.scope(conn, settings, model, version, w.start, w.end)
    spec = next((f for f in sc.model.features if f["name"] == feature), None)
    if spec is None:
        raise not_found("unknown_feature", f"model {model!r} has no feature "
                        f"{feature[:200]!r}", "feature")
    report, inputs = reports.drift_report_with_windows(conn, settings, sc, profiles)
    entry = report["versions"][0]
    row = next((f for f in entry["features"] if f["feature"] == feature), None)
    v = FeatureView(model, version, feature, report["window_start"], report["window_end"], row,
                    kind=spec["type"])
    if spec["type"] == "embedding":
        emb = entry.get("embeddings") or {}
        v.embedding = next((e for e in emb.get("features") or []
                            if e["feature"] == feature), None)
        v.lines = dict(emb.get("lines") or {})
        if v.embedding is None:
            v.reason = entry["reference"].get("reason") or "no reference for this version"
        return v, None
    used = inputs[version]
    curves = None if used.profile is None else column_curves(used.window, used.profile,
                                                             feature)
    if row is None:
        v.reason = entry["reference"].get("reason") or "no reference for this version"
    return v, curves


def _embedding_history(conn: Connection, settings: Settings, v: FeatureView) -> FeatureView:
    """The stored effect of the day before the window's end, each window with its stored
    p-value, drawn with the policy's lines."""
    end = datetime.fromisoformat(v.window_end)
    start = end - history.FEATURE_SPAN
    rows = history.read(conn, settings, v.model, "embedding_shift", version=None,
                        start=start, end=end, subject=v.feature)
    pvalues = {(r["window_start"], r["window_end"]): r["value"]
               for r in history.read(conn, settings, v.model, "embedding_shift_pvalue",
                                     version=v.version, start=start, end=end,
                                     subject=v.feature)}
    v.history_start = start.isoformat()
    v.history = [{**r, "pvalue": pvalues.get((r["window_start"], r["window_end"]))}
                 for r in rows if r["version"] == v.version]
    v.starts = history.version_starts(rows)
    v.series = charts.series(history.points(v.history), v.lines, v.starts)
    return v


def feature_view(conn: Connection, settings: Settings, profiles: ProfileCache, model: str,
                 version: str, feature: str, w: Window) -> FeatureView:
    v, curves = _drift(conn, settings, profiles, model, version, feature, w)
    if v.kind == "embedding":
        return _embedding_history(conn, settings, v)
    if v.row is not None:
        v.bins = bin_rows(v.row)
        v.histogram = svg.histogram(v.row["bins"], v.row["reference_counts"],
                                    v.row["current_counts"], width=480, height=120)
        th = v.row["thresholds"]
        v.lines = {"warning": th.get("psi_warning"), "critical": th.get("psi_critical")}
    if curves is not None:
        v.curves, v.ecdf = curves, charts.ecdf(curves)
    end = datetime.fromisoformat(v.window_end)
    start = end - history.FEATURE_SPAN
    rows = history.read(conn, settings, model, "feature_psi", version=None, start=start,
                        end=end, subject=feature)
    v.history_start = start.isoformat()
    v.history = [r for r in rows if r["version"] == version]
    v.starts = history.version_starts(rows)
    v.series = charts.series(history.points(v.history), v.lines, v.starts)
    return v
