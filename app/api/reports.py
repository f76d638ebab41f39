"""The REST reports over any window: drift, calibration, cohorts and a metric's history."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query

from app.api.auth import auth_responses, scoped
from app.api.deps import EngineDep, ProfilesDep, SettingsDep, error_responses, in_snapshot
from app.evaluation import reports

router = APIRouter(prefix="/v1/models", tags=["reports"],
                   responses=auth_responses(),
                   dependencies=[Depends(scoped({"GET": "read", "POST": "admin"}))])
ERRORS = error_responses(400, 404, 413, 415, 422, 503)
EXAMPLE_WINDOW = {"window_start": "2026-11-23T09:00:00+00:00",
                  "window_end": "2026-11-23T10:00:00+00:00"}
# a few of the effective policy's knobs (the report carries every one)
EXAMPLE_POLICY = {"psi_warning": 0.015, "psi_critical": 0.15, "ece_warning": 0.05,
                  "ece_critical": 0.1, "min_n": 100, "page": True, "features": {}}
EXAMPLES: dict[str, Any] = {
    "drift": {"model": "fraud", "task": "binary_classification", **EXAMPLE_WINDOW, "empty": False,
              "versions": [{"version": "v2", "n": 5120,
                            "reference": {"source": "upload", "n_rows": 5000},
                            "features": [{"feature": "amount", "type": "numeric",
                                          "psi": 0.31, "psi_band": "major",
                                          "ks_statistic": 0.18, "ks_pvalue": 1.2e-40,
                                          "ks_pvalue_adjusted": 2.4e-40, "missing_rate": 0.0,
                                          "n_reference": 5000, "n_current": 5120,
                                          "decision": "critical", "importance": 0.12}],
                            "prediction": {"feature": "prediction", "psi": 0.04,
                                           "decision": "ok"},
                            "multivariate": {"n": 5120, "mean": 1.93, "reference_mean": 1.71,
                                             "reference_sd": 0.52, "effect": 0.42,
                                             "pvalue": 1.1e-170, "components": 4,
                                             "decision": "critical"}}],
              "policy": EXAMPLE_POLICY},
    "performance": {"model": "fraud", "task": "binary_classification", **EXAMPLE_WINDOW,
                    "empty": False, "policy": EXAMPLE_POLICY, "versions": [
        {"version": "v2", "predictions": 5120, "status": "ok", "n": 5120,
         "decision": "warning", "metrics": [
             {"metric": "precision", "estimate": 0.58, "std": 0.011, "lower": 0.558,
              "upper": 0.602, "realized": 0.61, "reference": 0.71, "drop": 0.13,
              "pvalue": 1e-30, "subjects": 4, "decision": "warning"}],
         "roc_auc": 0.81, "roc_auc_bound": 0.0006,
         "realized": {"labeled": 1830, "accuracy": 0.77, "precision": 0.61, "recall": 0.58,
                      "f1": 0.59, "reason": None},
         "reference_realized": {"accuracy": 0.8, "precision": 0.71, "recall": 0.6,
                                "f1": 0.65}}]},
    "calibration": {"model": "fraud", "task": "binary_classification", **EXAMPLE_WINDOW,
                    "empty": False, "policy": EXAMPLE_POLICY, "versions": [
        {"version": "v2", "predictions": 5120, "n": 3900, "ece": 0.031, "mce": 0.08,
         "brier": 0.061, "label_coverage": 0.76, "decision": "ok",
         "bins": [{"lower": 0.0, "upper": 0.1, "count": 2100, "mean_confidence": 0.03,
                   "observed_rate": 0.035}]}]},
    "cohorts": {"model": "fraud", "task": "binary_classification", **EXAMPLE_WINDOW,
                "empty": False, "policy": EXAMPLE_POLICY, "versions": [
        {"version": "v2", "n": 5120, "cohort_keys": {"region": {
            "overall": {"n": 3900, "error_rate": 0.06},
            "cohorts": [{"cohort": "eu", "n": 2000, "error_rate": 0.21, "ci_low": 0.19,
                         "ci_high": 0.23, "delta_error_rate": 0.15, "decidable": True,
                         "decision": "warning"}]}},
         "generalization_gap": {
             "overall": {"n": 3900, "validation_error": 0.05, "production_error": 0.06,
                         "ci_low": 0.053, "ci_high": 0.068, "gap": 0.01,
                         "lines": {"warning": 0.07, "critical": 0.1},
                         "gate": "interval_lower_bound", "decision": "ok",
                         "method": "error rate, Wilson 95% interval"},
             "cohorts": [{"cohort_key": "region", "cohort": "eu", "n": 2000,
                          "validation_error": 0.08, "production_error": 0.21,
                          "ci_low": 0.19, "ci_high": 0.23, "gap": 0.13,
                          "lines": {"warning": 0.1, "critical": 0.13},
                          "gate": "interval_lower_bound", "decision": "critical",
                          "method": "error rate, Wilson 95% interval"}]}}]},
    "history": {"model": "fraud", "metric": "feature_psi", "points": [
        {"version": "v2", "subject": "amount", **EXAMPLE_WINDOW, "n": 5120, "value": 0.31,
         "decision": "critical", "method": "psi eps=1e-4 ref=upload"}],
        "next_cursor": None},
}


# The reports' envelopes, typed for generated clients; what each version carries varies by
# report and task (the examples and docs/reports.md), so its objects stay open.
_TIME = {"type": "string", "format": "date-time"}
_OPEN = {"type": "object", "additionalProperties": True}
_NULLABLE = {k: {"type": [t, "null"]} for k, t in (
    ("version", "string"), ("subject", "string"), ("n", "integer"), ("value", "number"),
    ("decision", "string"), ("method", "string"))}
REPORT_SCHEMA = {"type": "object", "additionalProperties": True,
                 "required": ["model", "task", "window_start", "window_end", "versions",
                              "empty", "policy"],
                 "properties": {
                     "model": {"type": "string"}, "task": {"type": "string"},
                     "window_start": _TIME, "window_end": _TIME, "requested_start": _TIME,
                     "requested_end": _TIME, "empty": {"type": "boolean"}, "policy": _OPEN,
                     "versions": {"type": "array", "items": {
                         **_OPEN, "required": ["version"],
                         "properties": {"version": {"type": "string"},
                                        "n": {"type": "integer"}}}}}}
HISTORY_SCHEMA = {"type": "object", "additionalProperties": True,
                  "required": ["model", "metric", "points"],
                  "properties": {
                      "model": {"type": "string"}, "metric": {"type": "string"},
                      "next_cursor": {"type": ["string", "null"]},
                      "points": {"type": "array", "items": {
                          **_OPEN, "required": ["window_start", "window_end"],
                          "properties": {"window_start": _TIME, "window_end": _TIME,
                                         **_NULLABLE}}}}}


def ok(name: str) -> dict[int | str, dict[str, Any]]:
    schema = HISTORY_SCHEMA if name == "history" else REPORT_SCHEMA
    return {**ERRORS, 200: {"content": {"application/json": {
        "schema": {**schema, "title": f"{name.capitalize()}Report"},
        "example": EXAMPLES[name]}}}}


Start = Annotated[datetime | None, Query(description="window start (ISO 8601); default: the "
                                         "latest window the jobs computed")]
End = Annotated[datetime | None, Query(description="window end (ISO 8601, exclusive)")]
Version = Annotated[str | None, Query(description="one version; default: every version with "
                                      "traffic in the window")]


@router.get("/{model}/reports/drift", responses=ok("drift"),
            summary="Per-feature PSI, KS and missing rate against the reference, and the "
            "numeric features' multivariate drift (PCA reconstruction error)")
async def drift(model: str, engine: EngineDep, settings: SettingsDep, profiles: ProfilesDep,
                version: Version = None, start: Start = None,
                end: End = None) -> dict[str, Any]:
    """Computed on demand with the scheduled jobs' code, over the window asked for (default: the
    latest window the jobs computed): per feature and for the prediction, PSI and KS against the
    reference with their decision, the missing rate, out-of-range values and unseen categories,
    and the feature's importance in the version's weights. Without a reference a version is
    compared with its own first traffic, and the answer says so. An empty window says when its
    data will show."""
    return await in_snapshot(engine, lambda c: reports.drift_report(
        c, settings, reports.scope(c, settings, model, version, start, end), profiles))


@router.get("/{model}/reports/performance", responses=ok("performance"),
            summary="Accuracy, precision, recall, F1 and ROC AUC estimated from the scores "
                    "alone (CBPE), before labels, against the reference's realized values")
async def performance(model: str, engine: EngineDep, settings: SettingsDep,
                      profiles: ProfilesDep, version: Version = None, start: Start = None,
                      end: End = None) -> dict[str, Any]:
    """Computed on demand over the window asked for (default: the latest window the jobs
    computed), from the scores alone: the version's labeled reference calibrates them, and the
    expected confusion matrix gives each metric's estimate with its 95% interval, its drop
    against the reference's realized value and the decision; ROC AUC with its histogram bound;
    the realized accuracy beside them once labels came. A version whose reference had no labels
    is not_applicable, with the reason."""
    return await in_snapshot(engine, lambda c: reports.performance_report(
        c, settings, reports.scope(c, settings, model, version, start, end), profiles))


@router.get("/{model}/reports/calibration", responses=ok("calibration"),
            summary="ECE, MCE, Brier and reliability bins over the labeled predictions")
async def calibration(model: str, engine: EngineDep, settings: SettingsDep,
                      version: Version = None, start: Start = None, end: End = None,
                      bins: Annotated[int | None, Query(ge=2, le=100)] = None) -> dict[str, Any]:
    """Over the window's labelled predictions (the default window lags by the policy's
    label_lag_seconds): ECE, MCE, Brier, the reliability bins (bins=2..100) with their mean
    confidence and observed rate, the label coverage and the decision."""
    return await in_snapshot(engine, lambda c: reports.calibration_report(
        c, settings, reports.scope(c, settings, model, version, start, end, needs_labels=True),
        bins))


@router.get("/{model}/reports/cohorts", responses=ok("cohorts"),
            summary="Error per cohort with 95% Wilson intervals and the delta to overall; "
                    "production error against the version's registered validation error")
async def cohorts(model: str, engine: EngineDep, settings: SettingsDep, version: Version = None,
                  start: Start = None, end: End = None) -> dict[str, Any]:
    """For each cohort key, each value's error with its 95% Wilson interval and its delta to the
    overall error, decided against the policy; and the generalization gap: production error
    against the validation error registered with the version (training.validation_error),
    overall and per cohort."""
    return await in_snapshot(engine, lambda c: reports.cohorts_report(
        c, settings, reports.scope(c, settings, model, version, start, end,
                                   needs_labels=True)))


@router.get("/{model}/history", responses=ok("history"),
            summary="The stored time series of one metric")
async def history(model: str, engine: EngineDep, settings: SettingsDep,
                  metric: Annotated[str, Query(description="e.g. feature_psi, calibration_ece")],
                  feature: str | None = None,
                  cohort: Annotated[str | None, Query(description="cohort_key=value")] = None,
                  version: Version = None, start: Start = None,
                  end: End = None,
                  limit: Annotated[int, Query(ge=1, le=10_000,
                                              description="points per page")] = 10_000,
                  cursor: Annotated[str | None, Query(
                      max_length=2048, description="next_cursor of the previous page")] = None,
                  ) -> dict[str, Any]:
    """What the scheduled jobs stored for one metric of the model (feature_psi with feature=, say),
    in pages of limit points: a page that is not the last carries next_cursor, to pass as cursor
    for the next one."""
    return await in_snapshot(engine, lambda c: reports.history_report(
        c, settings, model, metric, feature, cohort, version, start, end, limit, cursor))
