"""The /metrics snapshot: what the model-quality collector exports (the latest stored results
and registry facts), loaded in a few set-based queries whose cost depends on the models and
the latest window, never on the history kept (cached by the collector)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Engine, and_, case, func, literal, or_, select

from app.storage.tables import (
    feature_weights,
    job_runs,
    maintenance_windows,
    metric_results,
    model_versions,
    models,
    predictions,
    slo_counters,
    version_deltas,
    weight_stats,
)


def _ts(v: datetime) -> float:
    return (v.replace(tzinfo=UTC) if v.tzinfo is None else v).timestamp()


@dataclass(frozen=True)
class MetricsSnapshot:
    """One read of what /metrics exports about model quality; every replica reads the same."""

    # per model: its stored policy, and whether a maintenance window is open now (the
    # database's answer, so every replica exports the same value)
    policies: dict[str, dict[str, Any]] = field(default_factory=dict)
    maintenance: dict[str, bool] = field(default_factory=dict)
    # the latest window's stored rows per (job, version): model, version, metric, subject, n,
    # value, decision, detail
    results: list[dict[str, Any]] = field(default_factory=list)
    job_last_success: dict[tuple[str, str], float] = field(default_factory=dict)
    job_last_failed: dict[tuple[str, str], bool] = field(default_factory=dict)
    last_prediction: dict[str, float] = field(default_factory=dict)
    slo: dict[str, tuple[int, int]] = field(default_factory=dict)  # (labeled, errors)
    versions: list[dict[str, Any]] = field(default_factory=list)
    weights: list[dict[str, Any]] = field(default_factory=list)
    deltas: list[dict[str, Any]] = field(default_factory=list)
    features: list[dict[str, Any]] = field(default_factory=list)
    # per model: (expected interval, pages, unused features page), decided from ``policies``
    # by the model policy (evaluation/policy.py), not by storage
    model_policy: dict[str, tuple[float | None, bool, bool]] = field(default_factory=dict)


def load_snapshot(engine: Engine, *, max_result_age_seconds: float,
                  max_versions: int, jobs: Iterable[str],
                  max_cohorts: int | None = None) -> MetricsSnapshot:
    """The snapshot, ``model_policy`` left to the caller. With ``max_cohorts``, per version,
    metric and cohort key only that many cohort rows are read, the worst first (what /metrics
    exports: the rest is folded into one series), each with the key's number of cohorts
    (``subjects_total``), so the read does not grow with the cohorts stored."""
    now = datetime.now(UTC)
    since = now - timedelta(seconds=max_result_age_seconds)
    with engine.connect() as conn:
        policies = conn.execute(select(models.c.id, models.c.name, models.c.policy)).all()
        model_names = {mid: name for mid, name, _ in policies}
        mw = maintenance_windows
        in_maintenance = set(conn.execute(select(mw.c.model_id).distinct().where(
            mw.c.starts_at <= now, mw.c.ends_at > now)).scalars())
        vrows = conn.execute(select(model_versions).order_by(model_versions.c.model_id,
                                                             model_versions.c.id)).all()
        recent: dict[int, list[Any]] = {}
        for v in vrows:
            recent.setdefault(v.model_id, []).append(v)
        exported = {v.id for vs in recent.values() for v in vs[-max_versions:]}
        versions = {v.id: (model_names[v.model_id], v.version) for v in vrows}
        result_rows = _latest_results(conn, jobs, since, max_cohorts)
        last_ok, last_runs = _job_state(conn, jobs)
        facts = _facts(conn, exported, versions)
    return MetricsSnapshot(
        policies={name: policy or {} for _, name, policy in policies},
        maintenance={name: mid in in_maintenance for mid, name in model_names.items()},
        results=[{"model": versions[r.version_id][0], "version": versions[r.version_id][1],
                  "metric": r.metric, "subject": r.subject, "n": r.n, "value": r.value,
                  "decision": r.decision, "detail": r.detail,
                  **({"subjects_total": r.total} if r.total is not None else {})}
                 for r in result_rows if r.version_id in versions],
        job_last_success={(job, model_names[mid]): _ts(ts) for job, mid, ts in last_ok
                          if mid in model_names and ts is not None},
        job_last_failed={(job, model_names[mid]): status == "failure"
                         for job, mid, status in last_runs if mid in model_names},
        last_prediction={name: _ts(ts) for name, ts in facts["last_prediction"]
                         if ts is not None},
        slo={model_names[mid]: (n, e) for mid, n, e in facts["slo"] if mid in model_names},
        versions=[_version(model_names[v.model_id], v) for v in vrows],
        weights=facts["weights"], deltas=facts["deltas"], features=facts["features"])


COHORT_METRICS = ("cohort_error_ratio", "cohort_mae")  # subject "key=value"


def _cohort_key(conn: Connection, subject: Any) -> Any:
    if conn.dialect.name == "postgresql":
        return func.split_part(subject, "=", 1)
    return func.substr(subject, 1, func.instr(subject, "=") - 1)


def _latest_results(conn: Connection, jobs: Iterable[str], since: datetime,
                    max_cohorts: int | None = None) -> list[Any]:
    """Per (job, version): its latest window within the age limit, then that window's rows;
    both by index (revision 0009), so older windows are never read. With ``max_cohorts``,
    a cohort key's rows are ranked in the database and only the worst ``max_cohorts`` come
    back (NULL and NaN last, as the fold orders them), with the key's count."""
    m, v = metric_results, model_versions
    result_rows: list[Any] = []
    for job in jobs:
        we = (select(m.c.window_end)  # ORDER BY + LIMIT: a backward index scan, 1 row
              .where(m.c.job == job, m.c.model_id == v.c.model_id,
                     m.c.version_id == v.c.id, m.c.window_end >= since)
              .order_by(m.c.window_end.desc()).limit(1)
              .correlate(v).scalar_subquery())
        latest = select(v.c.model_id, v.c.id.label("vid"), we.label("we")).subquery()
        of_window = and_(m.c.job == job, m.c.model_id == latest.c.model_id,
                         m.c.version_id == latest.c.vid, m.c.window_end == latest.c.we)
        cols = (m.c.version_id, m.c.metric, m.c.subject, m.c.n, m.c.value, m.c.decision,
                m.c.detail)
        if max_cohorts is None:
            result_rows += conn.execute(select(*cols, literal(None).label("total"))
                                        .join(latest, of_window)).all()
            continue
        result_rows += conn.execute(select(*cols, literal(None).label("total"))
                                    .join(latest, of_window)
                                    .where(m.c.metric.not_in(COHORT_METRICS))).all()
        group = (m.c.version_id, m.c.metric, _cohort_key(conn, m.c.subject))
        last = case((or_(m.c.value.is_(None), m.c.value == float("nan")), 1), else_=0)
        ranked = (select(*cols, func.count().over(partition_by=group).label("total"),
                         func.row_number().over(partition_by=group, order_by=(
                             last, m.c.value.desc(), m.c.subject)).label("rank"))
                  .join(latest, of_window).where(m.c.metric.in_(COHORT_METRICS)).subquery())
        result_rows += conn.execute(
            select(*(ranked.c[c.name] for c in cols), ranked.c.total)
            .where(ranked.c.rank <= max_cohorts)).all()
    return result_rows


def _job_state(conn: Connection, jobs: Iterable[str]
               ) -> tuple[list[tuple[str, int, Any]], list[tuple[str, int, str]]]:
    """Per (job, model): the last success and the last run's status, each one descent of an
    index (revision 0009), so the cost follows the models, not the runs kept."""
    j = job_runs
    last_ok: list[tuple[str, int, Any]] = []
    last_runs: list[tuple[str, int, str]] = []
    for job in jobs:
        of_model = (j.c.job == job, j.c.model_id == models.c.id)
        ok = (select(func.max(j.c.finished_at)).where(*of_model, j.c.status == "success")
              .correlate(models).scalar_subquery())
        status = (select(j.c.status).where(*of_model).order_by(j.c.id.desc()).limit(1)
                  .correlate(models).scalar_subquery())
        for mid, ts, st in conn.execute(select(models.c.id, ok, status)):
            last_ok.append((job, mid, ts))
            if st is not None:
                last_runs.append((job, mid, st))
    return last_ok, last_runs


def _facts(conn: Connection, exported: set[int],
           versions: dict[int, tuple[str, str]]) -> dict[str, Any]:
    """Registry facts: newest prediction per model, the SLO counters, and the weights,
    feature importance and weight deltas of the exported versions."""
    p = predictions
    newest = (select(func.max(p.c.ts)).where(p.c.model_id == models.c.id)
              .correlate(models).scalar_subquery())
    ids = sorted(exported)
    weights = conn.execute(select(weight_stats.c.version_id, weight_stats.c.tensor,
                                  weight_stats.c.stats)
                           .where(weight_stats.c.version_id.in_(ids))).all() if ids else []
    features = conn.execute(select(feature_weights.c.version_id, feature_weights.c.stats)
                            .where(feature_weights.c.version_id.in_(ids))).all() if ids else []
    deltas = conn.execute(select(version_deltas.c.base_version_id,
                                 version_deltas.c.candidate_version_id,
                                 version_deltas.c.delta)).all()
    return {
        "last_prediction": conn.execute(select(models.c.name, newest)).all(),
        "slo": conn.execute(select(slo_counters.c.model_id, slo_counters.c.labeled,
                                   slo_counters.c.errors)).all(),
        "weights": [{"model": versions[w.version_id][0], "version": versions[w.version_id][1],
                     "layer": w.tensor, "stats": w.stats} for w in weights],
        "deltas": [{"model": versions[d.candidate_version_id][0],
                    "version": versions[d.candidate_version_id][1],
                    "base_version": versions[d.base_version_id][1], "overall": d.delta["overall"],
                    "features": d.delta.get("features")}
                   for d in deltas if d.candidate_version_id in exported],
        "features": [{"model": versions[f.version_id][0], "version": versions[f.version_id][1],
                      "nonzero": f.stats["nonzero"],
                      "importance": {x["feature"]: x["importance"] for x in f.stats["features"]}}
                     for f in features],
    }


def _version(model: str, v: Any) -> dict[str, Any]:
    meta = v.metadata or {}
    r = meta.get("regularization")
    return {"model": model, "version": v.version, "registered_at": _ts(v.registered_at),
            "regularization": r["type"] if isinstance(r, dict) and r.get("type") else "unknown",
            "artifact_bytes": meta.get("artifact_bytes"), "training": meta.get("training") or {}}
