"""What /metrics shows about model quality: the latest stored results and registry facts,
read in a few set-based queries (cached by the collector)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Engine, and_, func, select

from app.storage.tables import (
    job_runs,
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


def load_snapshot(engine: Engine, *, max_result_age_seconds: float,
                  max_versions: int) -> dict[str, Any]:
    since = datetime.now(UTC) - timedelta(seconds=max_result_age_seconds)
    with engine.connect() as conn:
        model_names = dict(conn.execute(select(models.c.id, models.c.name)).all())
        vrows = conn.execute(select(model_versions).order_by(model_versions.c.model_id,
                                                             model_versions.c.id)).all()
        versions = {v.id: (model_names[v.model_id], v.version) for v in vrows}
        recent: dict[int, list[Any]] = {}
        for v in vrows:
            recent.setdefault(v.model_id, []).append(v)
        exported = {v.id for vs in recent.values() for v in vs[-max_versions:]}

        m = metric_results
        latest = (select(m.c.job, m.c.model_id, m.c.version_id,
                         func.max(m.c.window_end).label("we"))
                  .where(m.c.window_end >= since)
                  .group_by(m.c.job, m.c.model_id, m.c.version_id).subquery())
        result_rows = conn.execute(
            select(m.c.version_id, m.c.metric, m.c.subject, m.c.n, m.c.value, m.c.decision,
                   m.c.detail)
            .join(latest, and_(m.c.job == latest.c.job, m.c.model_id == latest.c.model_id,
                               m.c.version_id == latest.c.version_id,
                               m.c.window_end == latest.c.we))).all()

        j = job_runs
        last_ok = conn.execute(select(j.c.job, j.c.model_id, func.max(j.c.finished_at))
                               .where(j.c.status == "success", j.c.model_id.is_not(None))
                               .group_by(j.c.job, j.c.model_id)).all()
        last_id = (select(func.max(j.c.id).label("id")).where(j.c.model_id.is_not(None))
                   .group_by(j.c.job, j.c.model_id).subquery())
        last_runs = conn.execute(select(j.c.job, j.c.model_id, j.c.status)
                                 .join(last_id, j.c.id == last_id.c.id)).all()

        p = predictions
        newest = (select(func.max(p.c.ts)).where(p.c.model_id == models.c.id)
                  .correlate(models).scalar_subquery())
        last_pred = conn.execute(select(models.c.name, newest)).all()
        slo = conn.execute(select(slo_counters.c.model_id, slo_counters.c.labeled,
                                  slo_counters.c.errors)).all()
        weights = conn.execute(select(weight_stats.c.version_id, weight_stats.c.tensor,
                                      weight_stats.c.stats)
                               .where(weight_stats.c.version_id.in_(sorted(exported)))
                               ).all() if exported else []
        deltas = conn.execute(select(version_deltas.c.base_version_id,
                                     version_deltas.c.candidate_version_id,
                                     version_deltas.c.delta)).all()

    def reg(meta: dict[str, Any]) -> str:
        r = (meta or {}).get("regularization")
        return r["type"] if isinstance(r, dict) and r.get("type") else "unknown"

    return {
        "results": [{"model": versions[r.version_id][0], "version": versions[r.version_id][1],
                     "metric": r.metric, "subject": r.subject, "n": r.n, "value": r.value,
                     "decision": r.decision, "detail": r.detail}
                    for r in result_rows if r.version_id in versions],
        "job_last_success": {(job, model_names[mid]): _ts(ts) for job, mid, ts in last_ok
                             if mid in model_names and ts is not None},
        "job_last_failed": {(job, model_names[mid]): status == "failure"
                            for job, mid, status in last_runs if mid in model_names},
        "last_prediction": {name: _ts(ts) for name, ts in last_pred if ts is not None},
        "slo": {model_names[mid]: (n, e) for mid, n, e in slo if mid in model_names},
        "versions": [{"model": model_names[v.model_id], "version": v.version,
                      "registered_at": _ts(v.registered_at), "regularization": reg(v.metadata),
                      "artifact_bytes": (v.metadata or {}).get("artifact_bytes")}
                     for v in vrows],
        "weights": [{"model": versions[w.version_id][0], "version": versions[w.version_id][1],
                     "layer": w.tensor, "stats": w.stats} for w in weights],
        "deltas": [{"model": versions[d.candidate_version_id][0],
                    "version": versions[d.candidate_version_id][1],
                    "base_version": versions[d.base_version_id][1], "overall": d.delta["overall"]}
                   for d in deltas if d.candidate_version_id in exported],
    }
