"""What the pages show, read through the REST reports' own functions
(app/evaluation/reports.py) on one snapshot, so a number on a page is the number of the JSON
report for the same window; here they are only ordered, grouped and drawn."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlencode

from sqlalchemy import Connection

from app.evaluation import policy as model_policy
from app.evaluation import reports
from app.evaluation.catalogue import METRICS
from app.evaluation.checks import JOBS, LABEL_JOBS
from app.evaluation.policy import CRITICAL, OK, WARNING
from app.evaluation.profiles import ProfileCache
from app.monitoring import INSUFFICIENT_DATA
from app.monitoring.cohort import wilson_interval
from app.pages import charts, history, svg
from app.settings import Settings
from app.storage import registry, results
from app.storage.db import as_utc

# Worst first: what pages comes before what does not.
RANK = {CRITICAL: 0, WARNING: 1, INSUFFICIENT_DATA: 2, OK: 3}
# Each check's alert, whose runbook section the status strip links (docs/runbooks.md).
ALERTS = {"feature drift": "ModelmonFeatureDriftHigh",
          "prediction drift": "ModelmonPredictionDriftHigh",
          "calibration": "ModelmonCalibrationErrorHigh",
          "performance estimate": "ModelmonEstimatedPerformanceDrop",
          "cohorts": "ModelmonCohortErrorRegression",
          "generalization gap": "ModelmonGeneralizationGapHigh",
          "label coverage": "ModelmonLabelCoverageLow",
          "multivariate drift": "ModelmonMultivariateDriftHigh",
          "embedding drift": "ModelmonEmbeddingDriftHigh"}


def rank(decision: str | None) -> int:
    return RANK.get(decision or "", 4)


def worst(decisions: list[str | None]) -> str | None:
    known = [d for d in decisions if d is not None]
    return min(known, key=rank) if known else None


@dataclass
class Window:
    """The window a page asks the reports for: the query's start and end as given (None
    lets each report take its own default, as the REST report does)."""

    start: datetime | None
    end: datetime | None


@dataclass
class Reports:
    drift: dict[str, Any]
    calibration: dict[str, Any]
    cohorts: dict[str, Any]
    performance: dict[str, Any] | None = None


def read_reports(conn: Connection, settings: Settings, profiles: ProfileCache, model: str,
                 version: str | None, w: Window) -> Reports:
    """The reports exactly as GET /v1/models/{model}/reports/... computes them, each
    version's window merged once where their windows agree (no label lag)."""
    merged: reports.Merged = {}
    unlabeled = reports.scope(conn, settings, model, version, w.start, w.end)
    drift, _ = reports.drift_report_with_windows(conn, settings, unlabeled, profiles, merged)
    labeled = reports.scope(conn, settings, model, version, w.start, w.end, needs_labels=True)
    cal = reports.calibration_report(conn, settings, labeled, None, merged)
    coh = reports.cohorts_report(conn, settings, labeled, merged)
    perf = reports.performance_report(conn, settings, unlabeled, profiles, merged)
    return Reports(drift, cal, coh, perf)


def _entry(report: dict[str, Any], version: str) -> dict[str, Any] | None:
    return next((v for v in report["versions"] if v["version"] == version), None)


@dataclass
class Check:
    """One cell of the status strip."""

    name: str
    decision: str | None
    n: int | None
    window_start: str
    window_end: str
    detail: str = ""
    runbook: str = ""
    grafana: str = ""  # the debug dashboard at this check's window, where Grafana is known


@dataclass
class VersionView:
    model: str
    version: str
    task: str
    reports: Reports
    checks: list[Check] = field(default_factory=list)
    features: list[dict[str, Any]] = field(default_factory=list)
    prediction: dict[str, Any] | None = None
    multivariate: dict[str, Any] | None = None  # the drift report's PCA error entry
    embeddings: list[dict[str, Any]] = field(default_factory=list)  # per embedding feature
    calibration: dict[str, Any] | None = None
    performance: dict[str, Any] | None = None  # the CBPE estimate, where it applies
    reliability: Any = None
    cohort_keys: list[dict[str, Any]] = field(default_factory=list)
    gap: dict[str, Any] | None = None
    label_coverage: float | None = None
    # the labels job's stored delay quantiles for the calibration window (None: no result yet)
    label_delay: dict[str, float | None] | None = None
    ece_history: list[dict[str, Any]] = field(default_factory=list)
    ece_chart: Any = None
    quadrant: Any = None

    @property
    def worst(self) -> str | None:
        return worst([c.decision for c in self.checks])


def feature_rows(entry: dict[str, Any] | None) -> list[dict[str, Any]]:
    """The drift table: worst decision first, then the larger PSI; each row with its
    histogram from the stored bins."""
    rows = [] if entry is None else list(entry["features"])
    rows.sort(key=lambda f: (rank(f.get("decision")), -(f.get("psi") or 0.0), f["feature"]))
    return [{**f, "histogram": svg.histogram(f["bins"], f["reference_counts"],
                                             f["current_counts"])} for f in rows]


def reliability_points(bins: list[dict[str, Any]]) -> list[svg.Point]:
    """The reliability bins with a Wilson 95% interval on each observed rate."""
    points = []
    for b in bins:
        if not b["count"] or b["mean_confidence"] is None or b["observed_rate"] is None:
            continue
        low, high = wilson_interval(round(b["observed_rate"] * b["count"]), b["count"])
        points.append(svg.Point(b["mean_confidence"], b["observed_rate"], low, high,
                                b["count"]))
    return points


def cohort_tables(entry: dict[str, Any] | None) -> list[dict[str, Any]]:
    """Per cohort key, its cohorts worst first (then the larger error), each with its
    interval drawn on the key's common scale; cohorts under the minimum n are greyed."""
    tables = []
    for key, rep in ({} if entry is None else entry["cohort_keys"]).items():
        rows = sorted(rep["cohorts"], key=lambda c: (
            rank(c.get("decision")), -(c.get("error_rate") or c.get("mae") or 0.0)))
        metric = "mae" if rep.get("task") == "regression" else "error_rate"
        scale = max([c.get("ci_high") or c.get(metric) or 0.0 for c in rows] + [0.0]) or 1.0
        drawn = []
        for c in rows:
            value = c.get(metric)
            rest = c.get(f"rest_{metric}")
            pic = svg.interval(value, c.get("ci_low") or value, c.get("ci_high") or value,
                               rest, scale, decision=c.get("decision") or "") \
                if value is not None else ""
            drawn.append({**c, "value": value, "rest": rest, "picture": pic,
                          "greyed": c.get("gate") == "min_n"})
        tables.append({"key": key, "metric": metric, "overall": rep.get("overall"),
                       "status": rep.get("status"), "reason": rep.get("reason"),
                       "min_n": rep.get("min_n"), "cohorts": drawn})
    return tables


def _runbook(settings: Settings, check: str) -> str:
    return f"{settings.pages_runbook_base.rstrip('/')}#{ALERTS[check].lower()}"


DEBUG_DASHBOARD = "modelmon-debug"  # the uid of dashboards/debug.json


def grafana_link(settings: Settings, model: str, version: str, start: str, end: str) -> str:
    """The debug dashboard at a model, version and window ('' without a Grafana URL)."""
    if not settings.pages_grafana_base:
        return ""
    ms = [int(datetime.fromisoformat(t).timestamp() * 1000) for t in (start, end)]
    query = urlencode({"var-model": model, "var-version": version, "from": ms[0],
                       "to": ms[1]})
    return f"{settings.pages_grafana_base.rstrip('/')}/d/{DEBUG_DASHBOARD}?{query}"


def _calibration_check(c: dict[str, Any] | None, window: Any) -> Check:
    """The calibration cell: the worst of ECE's decision and observed against expected
    positives' (overall and per cohort), as the check's alert and /metrics' check state
    count it, with the part that carries it named."""
    if c is None:
        return Check("calibration", None, None, *window)
    parts = {"ECE": c.get("decision")}
    if c.get("observed_expected") is not None:
        parts["O/E"] = c["observed_expected"].get("decision")
    cohorts = [x.get("decision") for x in c.get("cohorts_observed_expected", ())]
    if cohorts:
        parts["cohort O/E"] = worst(cohorts)
    decision = worst(list(parts.values()))
    detail = ", ".join(f"{name} {d}" for name, d in parts.items() if d is not None)
    return Check("calibration", decision, c.get("n"), *window, detail)


def _performance_check(r: Reports, version: str) -> list[Check]:
    """The performance estimate's cell, where it applies (a labeled reference)."""
    p = None if r.performance is None else _entry(r.performance, version)
    if p is None or p.get("status") == "not_applicable":
        return []
    assert r.performance is not None
    return [Check("performance estimate", p.get("decision"), p.get("n"),
                  r.performance["window_start"], r.performance["window_end"],
                  "before labels (CBPE)")]


def _multivariate_check(r: Reports, version: str) -> list[Check]:
    """The multivariate drift cell, where the drift report has an entry; a reference with no
    PCA basis shows no decision, only why."""
    d = _entry(r.drift, version)
    m = None if d is None else d.get("multivariate")
    if m is None:
        return []
    window = (r.drift["window_start"], r.drift["window_end"])
    if m.get("status") == "not_applicable":
        return [Check("multivariate drift", None, None, *window, "not applicable")]
    return [Check("multivariate drift", m.get("decision"), m.get("n"), *window,
                  f"PCA, {m.get('components')} components")]


def _embedding_check(r: Reports, version: str) -> list[Check]:
    """The embedding drift cell, where the version has embedding features: the worst of
    their decisions, with n the smallest of theirs."""
    d = _entry(r.drift, version)
    feats = [] if d is None else (d.get("embeddings") or {}).get("features") or []
    if not feats:
        return []
    window = (r.drift["window_start"], r.drift["window_end"])
    decided = [f for f in feats if f.get("status") != "not_applicable"]
    if not decided:
        return [Check("embedding drift", None, None, *window, "not applicable")]
    worst = max(decided, key=lambda f: rank(f.get("decision")))
    return [Check("embedding drift", worst.get("decision"), min(f.get("n") or 0 for f in decided),
                  *window, f"{len(decided)} of {len(feats)} embedding features decided")]


def status_strip(settings: Settings, r: Reports, v: VersionView) -> list[Check]:
    """Each check's decision, n and window, from the reports."""
    d, c, h = (_entry(r.drift, v.version), _entry(r.calibration, v.version),
               _entry(r.cohorts, v.version))
    dw, cw, hw = ((rep["window_start"], rep["window_end"]) for rep in
                  (r.drift, r.calibration, r.cohorts))
    feats = [] if d is None else d["features"]
    pred = None if d is None else d.get("prediction")
    keys = [] if h is None else list(h["cohort_keys"].values())
    cohort_decisions = [x.get("decision") for k in keys for x in k["cohorts"]]
    gap = None if h is None else h.get("generalization_gap")
    checks = [
        Check("feature drift", worst([f.get("decision") for f in feats]),
              None if d is None else d["n"], *dw,
              f"{sum(rank(f.get('decision')) <= 1 for f in feats)} of {len(feats)} features"),
        Check("prediction drift", None if pred is None else pred.get("decision"),
              None if d is None else d["n"], *dw),
        *_multivariate_check(r, v.version),
        *_embedding_check(r, v.version),
        _calibration_check(c, cw),
        *_performance_check(r, v.version),
        Check("cohorts", worst(cohort_decisions), None if h is None else h["n"], *hw),
        Check("generalization gap",
              None if gap is None else gap["overall"].get("decision"),
              None if gap is None else gap["overall"].get("n"), *hw),
    ]
    for check in checks:
        check.runbook = _runbook(settings, check.name)
        check.grafana = grafana_link(settings, v.model, v.version, check.window_start,
                                     check.window_end)
    return checks


def version_view(conn: Connection, settings: Settings, profiles: ProfileCache, model: str,
                 version: str, w: Window) -> VersionView:
    r = read_reports(conn, settings, profiles, model, version, w)
    v = VersionView(model, version, r.drift["task"], r)
    d, c, h = (_entry(r.drift, version), _entry(r.calibration, version),
               _entry(r.cohorts, version))
    v.checks = status_strip(settings, r, v)
    v.features = feature_rows(d)
    v.prediction = None if d is None else d.get("prediction")
    v.multivariate = None if d is None else d.get("multivariate")
    v.embeddings = [] if d is None else (d.get("embeddings") or {}).get("features") or []
    v.calibration = c
    p = None if r.performance is None else _entry(r.performance, version)
    v.performance = None if p is None or p.get("status") == "not_applicable" else p
    v.label_coverage = None if c is None else c.get("label_coverage")
    if c is not None and c.get("bins"):
        v.reliability = svg.reliability(reliability_points(c["bins"]))
    v.cohort_keys = cohort_tables(h)
    v.gap = None if h is None else h.get("generalization_gap")
    over_time(conn, settings, v)
    return v


def over_time(conn: Connection, settings: Settings, v: VersionView) -> None:
    """From the stored results: each drift row's sparkline, ECE over time, the label delay
    of the calibration window; and the drift against importance quadrant from the drift
    table."""
    r = v.reports
    end = datetime.fromisoformat(r.drift["window_end"])
    history.sparklines(conn, settings, v.model, v.version, v.features, end)
    v.label_delay = history.label_delay(
        conn, settings, v.model, v.version,
        *(datetime.fromisoformat(r.calibration[k]) for k in ("window_start", "window_end")))
    pol = r.calibration["policy"]
    v.ece_history, v.ece_chart = history.ece_series(
        conn, settings, v.model, v.version, datetime.fromisoformat(r.calibration["window_end"]),
        {"warning": pol.get("ece_warning"), "critical": pol.get("ece_critical")})
    dots = [charts.Dot(f["feature"], f["importance"], f["psi"], f.get("decision"))
            for f in v.features if f.get("importance") is not None and f.get("psi") is not None]
    if dots:
        v.quadrant = charts.quadrant(dots, r.drift["policy"]["psi_warning"], 1 / len(dots))


@dataclass
class ModelRow:
    """A line of the models page: one version, the worst decision the jobs stored for it (what
    /metrics exported and the alert rules fired on) with the checks that carry it, its
    traffic and label coverage in the window, and the model's last job run."""

    model: str
    version: str
    worst: str | None  # None: no job result in the window
    traffic: int
    label_coverage: float | None
    last_run: Any
    worst_checks: list[str] = field(default_factory=list)
    decided: list[tuple[str, str]] = field(default_factory=list)  # (job, window end) read


def stored_decisions(conn: Connection, settings: Settings, model: Any,
                     start: datetime, end: datetime) -> dict[int, dict[str, Any]]:
    """Per version id: the worst decision of each check in the jobs' latest windows that the
    ticks in (``start``, ``end``] computed (a label job's window ends the model's label lag
    earlier), folded as /metrics folds them into ``modelmon_check_state``, and the (job,
    window end) read. A version with no stored row there has no entry."""
    lag = timedelta(seconds=model_policy.effective(settings, model.policy).label_lag_seconds)
    out: dict[int, dict[str, Any]] = {}
    for job in JOBS:
        shift = lag if job in LABEL_JOBS else timedelta(0)
        for r in results.latest_window_decisions(conn=conn, model_id=model.id, job=job,
                                                 start=start - shift, end=end - shift):
            v = out.setdefault(r.version_id, {"checks": {}, "windows": set()})
            v["windows"].add((job, as_utc(r.window_end).isoformat()))
            check = METRICS[r.metric].check if r.metric in METRICS else None
            if check and r.decision:
                v["checks"][check] = worst([v["checks"].get(check), r.decision])
    return out


def models_view(conn: Connection, settings: Settings, profiles: ProfileCache,
                allowed: Any, w: Window) -> list[ModelRow]:
    """Every allowed model's versions: the decisions from the stored job results (a few
    reads a model, nothing recomputed), traffic and label coverage from the window's merged
    sums as the drift and calibration reports count them."""
    rows = []
    for model, _count in registry.list_models(conn=conn):
        if not allowed(model.name):
            continue
        last = results.last_run(conn=conn, model_id=model.id)
        unlabeled = reports.scope(conn, settings, model.name, None, w.start, w.end)
        labeled = reports.scope(conn, settings, model.name, None, w.start, w.end,
                                needs_labels=True)
        merged: reports.Merged = {}
        traffic = reports.outcome_counts(conn, settings, unlabeled, merged)
        coverage = reports.outcome_counts(conn, settings, labeled, merged)
        decided = stored_decisions(conn, settings, model, unlabeled.start, unlabeled.end)
        for ver in registry.list_versions(conn=conn, model_id=model.id):
            n, labels = coverage.get(ver.version, (0, 0))
            d = decided.get(ver.id, {"checks": {}, "windows": set()})
            bad = worst(list(d["checks"].values()))
            rows.append(ModelRow(
                model.name, ver.version, bad, traffic.get(ver.version, (0, 0))[0],
                labels / n if n else None, last,
                sorted(c for c, x in d["checks"].items() if bad is not None and x == bad),
                sorted(d["windows"])))
    return rows
