"""The model-quality families of /metrics: the latest stored results and registry facts, read
at scrape time (storage/snapshot.py) so every replica shows the same values, with bounded
label values (the worst subjects kept, the rest folded into __other__)."""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import Counter as Tally
from collections.abc import Callable, Iterable, Iterator
from dataclasses import replace
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import Engine

from app.evaluation import policy as model_policy
from app.evaluation.catalogue import METRICS
from app.evaluation.checks import JOBS
from app.evaluation.checks.versions import version_checks_by_model
from app.observability.families import QUALITY_FAMILIES, TRAINING_GAUGES
from app.settings import Settings
from app.storage.snapshot import MetricsSnapshot, load_snapshot

log = logging.getLogger("modelmon.metrics")
OTHER = "__other__"
OVERALL = "__all__"


def quality_snapshot(engine: Engine, settings: Settings) -> MetricsSnapshot:
    """The snapshot the collector reads, with each model's alerting policy and the decisions
    on its versions' weight deltas made under it now (evaluation/policy.py)."""
    snap = load_snapshot(engine, max_result_age_seconds=settings.metrics_max_result_age_seconds,
                         max_versions=settings.metrics_max_versions, jobs=JOBS,
                         max_cohorts=settings.metrics_max_cohorts)
    version_checks_by_model(settings, snap.policies, snap.deltas)
    return replace(snap, model_policy=model_policy.paging_by_model(settings, snap.policies))


def _finite(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


class QualityCollector(Collector):
    """Model-quality gauges from the latest stored results, cached for a few seconds so a
    scrape costs a handful of small queries at most every ``ttl`` seconds."""

    def __init__(self, load: Any, limits: dict[str, int], ttl: float,
                 interval_seconds: float) -> None:
        self._load = load
        self._limits = limits
        self._ttl = ttl
        self._interval = interval_seconds
        self._cache: tuple[float, list[Metric]] | None = None
        self._lock = threading.Lock()

    def describe(self) -> Iterable[Metric]:
        return []  # values come from the database at scrape time

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            now = time.monotonic()
            if self._cache is None or now - self._cache[0] > self._ttl:
                try:
                    self._cache = (now, build_families(self._load(), self._limits,
                                                       self._interval))
                except Exception as exc:  # noqa: BLE001 - a scrape never fails on the db
                    log.warning("quality metrics unavailable: %s", type(exc).__name__)
                    return iter(())
            return iter(self._cache[1])


DECISION = {"ok": 0, "insufficient_data": 0, "warning": 1, "critical": 2}
CHECK_OF = {name: m.check for name, m in METRICS.items() if m.check}
# the /metrics gauge of a stored metric's latest value (observability/families.py lists it)
RESULT_GAUGES = {name: m.gauge for name, m in METRICS.items() if m.gauge}
# Stored rows whose decision is also exported per subject (feature_ks_statistic shares its
# feature's drift decision with feature_psi, so it is not repeated).
SUBJECT_STATE = frozenset(m for m, d in METRICS.items() if d.subject_state)
# Stored rows of a feature (drift, data quality, embedding drift): labelled and folded by it.
OF_FEATURE = frozenset(m for m, d in METRICS.items() if d.subject == "feature")


def _fold(rows: list[dict[str, Any]], key: str, limit: int) -> list[dict[str, Any]]:
    """Keep the ``limit`` worst subjects (highest value), fold the rest into __other__ with
    the worst folded value, so a label never takes unbounded values."""
    by_subject: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        by_subject.setdefault(r[key], []).append(r)
    # the snapshot may hold only the worst rows of many (``subjects_total``: how many there were)
    if max([len(by_subject), *(r.get("subjects_total", 0) for r in rows)]) <= limit:
        return rows
    worst = sorted(by_subject, key=lambda s: -max((x["value"] for x in by_subject[s]
                                                   if _finite(x["value"])), default=-1.0))
    keep = set(worst[:max(limit - 1, 0)])
    out = [r for r in rows if r[key] in keep]
    folded: dict[tuple, dict[str, Any]] = {}
    for r in rows:
        if r[key] in keep:
            continue
        k = (r["model"], r["version"], r["metric"], r.get("cohort_key"))
        best = folded.get(k)
        if best is None or (_finite(r["value"]) and (not _finite(best["value"])
                                                      or r["value"] > best["value"])):
            folded[k] = {**r, key: OTHER}
    return out + list(folded.values())


Gauge = Callable[[str], GaugeMetricFamily]


def build_families(snap: MetricsSnapshot, limits: dict[str, int],
                   interval: float) -> list[Metric]:
    """Every model-quality family of a snapshot, in a stable order (each family where its
    first series is made), named, described and labelled by the catalogue
    (observability/families.py)."""
    fams: dict[str, Metric] = {}

    def gauge(name: str) -> GaugeMetricFamily:
        if name not in fams:
            f = QUALITY_FAMILIES[name]
            fams[name] = GaugeMetricFamily(name, f.help, labels=list(f.labels))
        return fams[name]  # type: ignore[return-value]

    state: dict[tuple[str, str, str], int] = {}
    for r in _folded_results(snap.results, limits):
        _result_families(r, gauge, state)
    for (model, version, check), value in sorted(state.items()):
        gauge("modelmon_check_state").add_metric([model, version, check], value)
    for model, ts in snap.last_prediction.items():
        gauge("modelmon_model_last_prediction_timestamp_seconds").add_metric([model], ts)
    _policy(snap.model_policy, snap.maintenance, gauge)
    fams.update(_slo_families(snap.slo))
    _job_families(snap, interval, gauge)
    _version_families(snap, limits, gauge)
    return list(fams.values())


def _folded_results(results: list[dict[str, Any]], limits: dict[str, int]
                    ) -> list[dict[str, Any]]:
    """The stored rows to export: per model at most ``limits["features"]`` features and per
    cohort key ``limits["cohorts"]`` cohorts (the rest folded). One pass to sort the rows,
    folding per model (and cohort key): linear in the rows."""
    by_model_features: dict[str, list[dict[str, Any]]] = {}
    by_model_key_cohorts: dict[tuple[str, str], list[dict[str, Any]]] = {}
    other: list[dict[str, Any]] = []
    for r in results:
        if r["metric"] in OF_FEATURE:
            r["feature"] = r["subject"]
            by_model_features.setdefault(r["model"], []).append(r)
        elif r["metric"] in ("cohort_error_ratio", "cohort_mae"):
            r["cohort_key"], _, r["cohort"] = r["subject"].partition("=")
            by_model_key_cohorts.setdefault((r["model"], r["cohort_key"]), []).append(r)
        else:
            other.append(r)
    features = [f for rs in by_model_features.values()
                for f in _fold(rs, "feature", limits["features"])]
    folded_cohorts = [c for rs in by_model_key_cohorts.values()
                      for c in _fold(rs, "cohort", limits["cohorts"])]
    return features + other + folded_cohorts


def _result_families(r: dict[str, Any], gauge: Gauge,
                     state: dict[tuple[str, str, str], int]) -> None:
    """The series of one stored row; its decision is added to ``state``, the worst decision
    per (model, version, check)."""
    check = CHECK_OF.get(r["metric"])
    if check:
        k = (r["model"], r["version"], check)
        state[k] = max(state.get(k, 0), DECISION.get(r["decision"], 0))
    mv = [r["model"], r["version"]]
    if r["metric"] in SUBJECT_STATE:
        # the decision per feature (drift, data quality) and per cohort, which the alert
        # rules fire on, so a page names its feature or cohort
        if r["metric"] in OF_FEATURE:
            gauge("modelmon_feature_check_state").add_metric(
                [*mv, r["feature"], check], DECISION.get(r["decision"], 0))
        else:
            gauge("modelmon_cohort_check_state").add_metric(
                [*mv, r["cohort_key"], r["cohort"]], DECISION.get(r["decision"], 0))
    if r["metric"] in RESULT_GAUGES and _finite(r["value"]):
        gauge(RESULT_GAUGES[r["metric"]]).add_metric([*mv, *_subject(r)], r["value"])
    if r["metric"] in ("feature_ks_statistic", "prediction_ks_statistic"):
        _ks_pvalue(r, mv, gauge)
    if r["metric"] == "calibration_ece":
        _reliability_bins(r, mv, gauge)
    if r["metric"] in ("cohort_error_ratio", "cohort_mae"):
        _cohort_families(r, mv, gauge)


def _subject(r: dict[str, Any]) -> list[str]:
    """The subject's label values of a stored row, in the order of its family's labels
    (families.SUBJECT_LABELS); folded features and cohorts carry __other__."""
    subject = METRICS[r["metric"]].subject
    if subject == "feature":
        return [r["feature"]]
    if subject == "cohort":
        key, _, cohort = r["subject"].partition("=")
        return [r.get("cohort_key", key), r.get("cohort", cohort)]
    return []


def _ks_pvalue(r: dict[str, Any], mv: list[str], gauge: Gauge) -> None:
    detail = r["detail"] or {}
    p = detail.get("pvalue_adjusted")
    p = detail.get("pvalue") if p is None else p
    if _finite(p):
        if r["metric"] == "feature_ks_statistic":
            gauge("modelmon_feature_ks_pvalue").add_metric([*mv, r["feature"]], p)
        else:
            gauge("modelmon_prediction_ks_pvalue").add_metric(mv, p)


def _reliability_bins(r: dict[str, Any], mv: list[str], gauge: Gauge) -> None:
    for b in (r["detail"] or {}).get("bins", []):
        edge = f"{b['upper']:g}"
        if _finite(b.get("mean_confidence")):
            gauge("modelmon_calibration_bin_confidence_ratio").add_metric(
                [*mv, edge], b["mean_confidence"])
        if _finite(b.get("observed_rate")):
            gauge("modelmon_calibration_bin_observed_ratio").add_metric(
                [*mv, edge], b["observed_rate"])


def _cohort_families(r: dict[str, Any], mv: list[str], gauge: Gauge) -> None:
    labels = [*mv, r["cohort_key"], r["cohort"]]
    detail = r["detail"] or {}
    if _finite(r["value"]):
        if r["metric"] == "cohort_error_ratio":
            gauge("modelmon_cohort_error_ratio").add_metric(labels, r["value"])
        else:
            gauge("modelmon_cohort_mae").add_metric(labels, r["value"])
            if _finite(detail.get("rmse")):
                gauge("modelmon_cohort_rmse").add_metric(labels, detail["rmse"])
    gauge("modelmon_cohort_samples").add_metric(labels, r["n"])
    gauge("modelmon_cohort_decidable").add_metric(labels, 1.0 if detail.get("decidable") else 0.0)


def _counter(name: str) -> CounterMetricFamily:
    f = QUALITY_FAMILIES[name]
    return CounterMetricFamily(name, f.help, labels=list(f.labels))


def _slo_families(slo: dict[str, tuple[int, int]]) -> dict[str, Metric]:
    labeled = _counter("modelmon_labeled_predictions_total")
    errors = _counter("modelmon_prediction_errors_total")
    for model, (n, e) in slo.items():
        labeled.add_metric([model], n)
        errors.add_metric([model], e)
    return {"modelmon_labeled_predictions": labeled, "modelmon_prediction_errors": errors}


def _job_families(snap: MetricsSnapshot, interval: float, gauge: Gauge) -> None:
    for job in JOBS:
        gauge("modelmon_job_interval_seconds").add_metric([job], interval)
    for (job, model), ts in snap.job_last_success.items():
        gauge("modelmon_job_last_success_timestamp_seconds").add_metric([job, model], ts)
    for (job, model), failed in snap.job_last_failed.items():
        gauge("modelmon_job_last_run_failed").add_metric([job, model], 1.0 if failed else 0.0)


def _version_families(snap: MetricsSnapshot, limits: dict[str, int], gauge: Gauge) -> None:
    """Registry facts per version: registration, artifact size, training figures, weights,
    feature importance and the weight deltas to the predecessor."""
    for v in snap.versions:
        mv = [v["model"], v["version"]]
        gauge("modelmon_model_version_registered_timestamp_seconds").add_metric(
            [*mv, v["regularization"]], v["registered_at"])
        if _finite(v.get("artifact_bytes")):
            gauge("modelmon_model_version_artifact_bytes").add_metric(mv, v["artifact_bytes"])
        _training(mv, v.get("training") or {}, limits["cohorts"], gauge)
    versions_per_model = Tally(v["model"] for v in snap.versions)
    for model, n in sorted(versions_per_model.items()):
        gauge("modelmon_model_versions").add_metric([model], n)
    _weights(snap.weights, limits["layers"], gauge)
    _feature_importance(snap.features, limits["features"], gauge)
    for d in snap.deltas:
        _delta_families(d, gauge)


def _delta_families(d: dict[str, Any], gauge: Gauge) -> None:
    labels = [d["model"], d["version"], d["base_version"]]
    for z in (d.get("features") or {}).get("zeroed_top", []):
        gauge("modelmon_version_zeroed_feature_importance_ratio").add_metric(
            [*labels, z["feature"]], z["importance_base"])
    o = d["overall"]
    if _finite(o.get("sparsity_change_pp")):
        gauge("modelmon_version_sparsity_delta_ratio").add_metric(
            labels, o["sparsity_change_pp"] / 100)
    for norm in ("l1", "l2"):
        if _finite(o.get(f"{norm}_relative_change")):
            gauge(f"modelmon_version_{norm}_relative_change_ratio").add_metric(
                labels, o[f"{norm}_relative_change"])
    checks = d.get("checks")
    for check, c in sorted(({} if checks is None else checks.by_name()).items()):
        gauge("modelmon_version_check_state").add_metric(
            [*labels, check], DECISION[c.decision])


def _policy(policies: dict[str, tuple[float | None, bool, bool]],
            maintenance: dict[str, bool], gauge: Any) -> None:
    """Each model's effective alerting policy, which the alert rules read, so a page follows
    the model's policy (docs/policy.md): the silence after which missing predictions page (no
    series for a batch model: no alert), whether critical findings page, and whether a
    maintenance window is open, and whether drift of a feature the version does not use
    pages."""
    for model, (interval, page, unused) in sorted(policies.items()):
        if interval is not None:
            gauge("modelmon_model_expected_interval_seconds").add_metric([model], interval)
        gauge("modelmon_model_paging").add_metric([model], 1.0 if page else 0.0)
        gauge("modelmon_model_unused_feature_paging").add_metric([model], 1.0 if unused else 0.0)
    for model, open_ in sorted(maintenance.items()):
        gauge("modelmon_model_maintenance").add_metric([model], 1.0 if open_ else 0.0)


def _training(mv: list[str], t: dict[str, Any], max_cohorts: int, gauge: Any) -> None:
    """A version's registered training figures, its validation gap (validation loss minus
    training loss) and up to ``max_cohorts`` per-cohort validation errors."""
    for key in TRAINING_GAUGES:
        if _finite(t.get(key)):
            gauge(f"modelmon_model_version_{key}").add_metric(mv, t[key])
    if _finite(t.get("train_loss")) and _finite(t.get("validation_loss")):
        gauge("modelmon_model_version_validation_gap").add_metric(
            mv, t["validation_loss"] - t["train_loss"])
    for cohort in sorted(t.get("cohort_validation_error") or {})[:max_cohorts]:
        value = t["cohort_validation_error"][cohort]
        key, _, name = cohort.partition("=")
        if _finite(value):
            gauge("modelmon_model_version_cohort_validation_error").add_metric(
                [*mv, key, name], value)


def _feature_importance(items: list[dict[str, Any]], limit: int, gauge: Any) -> None:
    """Importance share per feature and non-zero features per version. Past ``limit``
    features of a version, the most important are kept and the rest summed into __other__
    (so the shares still add up to 1)."""
    for f in items:
        mv = [f["model"], f["version"]]
        gauge("modelmon_version_nonzero_features").add_metric(mv, f["nonzero"])
        shares = sorted(((n, v) for n, v in f["importance"].items() if _finite(v)),
                        key=lambda nv: (-nv[1], nv[0]))
        keep = shares[:limit - 1] if len(shares) > limit else shares
        if len(keep) < len(shares):
            keep.append((OTHER, sum(v for _, v in shares[len(keep):])))
        for name, value in keep:
            gauge("modelmon_feature_importance_ratio").add_metric([*mv, name], value)


def _weights(items: list[dict[str, Any]], limit: int, gauge: Any) -> None:
    """Per layer and overall norms and sparsity; past ``limit`` layers of a version, the
    sparsest are kept and the rest folded into __other__."""
    by_version: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for w in items:
        by_version.setdefault((w["model"], w["version"]), []).append(w)
    for (model, version), layers in by_version.items():
        overall = [w for w in layers if w["layer"] == OVERALL]
        rest = sorted((w for w in layers if w["layer"] != OVERALL),
                      key=lambda w: -(w["stats"].get("sparsity") or 0.0))
        keep = rest[:limit - 1] if len(rest) > limit else rest
        folded = rest[len(keep):]
        series = [(w["layer"], w["stats"]) for w in overall + keep]
        if folded:
            count = sum(w["stats"]["count"] for w in folded)
            zeros = sum(w["stats"]["zeros"] for w in folded)
            series.append((OTHER, {
                "count": count, "zeros": zeros, "sparsity": zeros / count if count else None,
                "l1": sum(w["stats"]["l1"] for w in folded),
                "l2": math.sqrt(sum(w["stats"]["l2"] ** 2 for w in folded))}))
        for layer, s in series:
            labels = [model, version, layer]
            gauge("modelmon_weight_l1").add_metric(labels, s["l1"])
            gauge("modelmon_weight_l2").add_metric(labels, s["l2"])
            gauge("modelmon_weight_parameters").add_metric(labels, s["count"])
            if _finite(s.get("sparsity")):
                gauge("modelmon_weight_sparsity_ratio").add_metric(labels, s["sparsity"])
