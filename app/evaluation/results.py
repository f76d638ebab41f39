"""The rows the jobs store in `metric_results` for one window, named from the catalogue."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from app.evaluation.catalogue import METRICS
from app.evaluation.checks.quality import COLUMN_CHECKS
from app.evaluation.windows import MergedWindow
from app.storage.registry import ModelRow

Row = dict[str, Any]


def _row(job: str, model: ModelRow, version_id: int, metric: str, subject: str,
         start: datetime, end: datetime, n: int, value: float | None, decision: str,
         method: str, detail: dict[str, Any] | None = None) -> Row:
    if METRICS[metric].job != job:
        raise ValueError(f"{metric} is stored by the {METRICS[metric].job} job, not {job}")
    return {"job": job, "model_id": model.id, "version_id": version_id, "metric": metric,
            "subject": subject, "window_start": start, "window_end": end, "n": n,
            "value": value, "decision": decision, "method": method, "detail": detail,
            "computed_at": datetime.now(UTC)}


def drift_rows(model: ModelRow, w: MergedWindow, report: dict[str, Any],
               reference: dict[str, Any]) -> list[Row]:
    ref = reference.get("source", "none")
    psi_method = f"psi eps=1e-4 ref={ref}, noise gate chi2 x (1/n + 1/n_ref)"
    ks_method = (f"ks_2samp two-sided, BH across features, ref={ref} sample, D line max(floor, "
                 "noise quantile)")
    rows: list[Row] = []
    for f in report["features"]:
        args = (model, w.version_id)
        rows.append(_row("drift", *args, "feature_psi", f["feature"], w.start, w.end,
                         f["n_current"], f["psi"], f["decision"], psi_method,
                         {**_psi_detail(f), "reference_counts": f["reference_counts"],
                          "current_counts": f["current_counts"], "bins": f["bins"],
                          "importance": f.get("importance")}))
        for check in COLUMN_CHECKS:
            if f.get(check.decision) is not None:
                rows.append(_row("drift", *args, check.metric, f["feature"], w.start, w.end,
                                 f["n_current"], f[check.value], f[check.decision],
                                 check.method, check.detail(f)))
        if f["type"] == "numeric":
            rows.append(_row("drift", *args, "feature_ks_statistic", f["feature"], w.start,
                             w.end, f["n_current"], f["ks_statistic"], f["decision"], ks_method,
                             {"pvalue": f["ks_pvalue"],
                              "pvalue_adjusted": f["ks_pvalue_adjusted"],
                              "threshold": f.get("ks_threshold"), "gate": f.get("ks_gate"),
                              "thresholds": f["thresholds"]}))
    p = report["prediction"]
    if p is not None:
        rows.append(_row("drift", model, w.version_id, "prediction_psi", "", w.start, w.end,
                         p["n_current"], p["psi"], p["decision"], psi_method,
                         {**_psi_detail(p), "reference_counts": p["reference_counts"],
                          "current_counts": p["current_counts"], "bins": p["bins"]}))
        if p["type"] == "numeric":
            rows.append(_row("drift", model, w.version_id, "prediction_ks_statistic", "",
                             w.start, w.end, p["n_current"], p["ks_statistic"], p["decision"],
                             ks_method, {"pvalue": p["ks_pvalue"],
                                         "threshold": p.get("ks_threshold"),
                                         "gate": p.get("ks_gate"),
                                         "thresholds": p["thresholds"]}))
    return rows


def _psi_detail(f: dict[str, Any]) -> dict[str, Any]:
    """The band, the gate that decided and the lines it used, as the report states them."""
    return {"band": f["psi_band"], "gate": f.get("gate"),
            "decision_reason": f.get("decision_reason"),
            "horizon_seconds": f.get("horizon_seconds"),
            "min_support": f["psi_gate"].get("min_support"),
            "lines": f["psi_gate"].get("lines"), "thresholds": f["thresholds"]}


def calibration_rows(model: ModelRow, w: MergedWindow, r: dict[str, Any]) -> list[Row]:
    if r.get("status") == "not_applicable":
        return []
    method = f"equal-width {r['n_bins']} bins, {r['kind']}"
    detail = {"bins": r["bins"], "status": r["status"], "reason": r["reason"],
              "gate": r.get("gate"), "noise_quantile": r.get("noise_quantile"),
              "lines": r.get("lines"), "min_support": r.get("min_support"),
              "decision_reason": r.get("decision_reason"),
              "horizon_seconds": r.get("horizon_seconds"), "thresholds": r.get("thresholds")}
    return [
        _row("calibration", model, w.version_id, metric, "", w.start, w.end, r["n"], r[key],
             r["decision"], method, detail if metric == "calibration_ece" else None)
        for metric, key in (("calibration_ece", "ece"), ("calibration_mce", "mce"),
                            ("calibration_brier", "brier"))
    ]


def overall_error_rows(model: ModelRow, w: MergedWindow, overall: dict[str, Any] | None
                       ) -> list[Row]:
    """The overall error of the window (error_ratio, or error_mae for a regression)."""
    if overall is None:
        return []
    metric, value = (("error_mae", overall["mae"]) if overall["task"] == "regression"
                     else ("error_ratio", overall["error_rate"]))
    return [_row("cohorts", model, w.version_id, metric, "", w.start, w.end, overall["n"],
                 value, "ok", f"{overall['task']} overall", None)]


def cohort_rows(model: ModelRow, w: MergedWindow, report: dict[str, Any]) -> list[Row]:
    """Rows per cohort."""
    rows: list[Row] = []
    for key, r in report.items():
        regression = r["task"] == "regression"
        for c in r["cohorts"]:
            subject = f"{key}={'' if c['cohort'] is None else c['cohort']}"
            detail = {k: c.get(k) for k in ("ci_low", "ci_high", "decidable", "rmse",
                                            "delta_error_rate", "delta_mae", "delta_rmse",
                                            "rest_error_rate", "rest_mae", "pvalue",
                                            "pvalue_adjusted", "gate", "horizon_seconds")}
            detail["thresholds"] = r.get("thresholds")
            metric, value = (("cohort_mae", c.get("mae")) if regression
                             else ("cohort_error_ratio", c.get("error_rate")))
            rows.append(_row("cohorts", model, w.version_id, metric, subject, w.start, w.end,
                             c["n"], value, c["decision"],
                             "Wilson 95% interval; one-sided test against the rest, Bonferroni"
                             if not regression else "MAE; one-sided Welch test against the rest",
                             detail))
    return rows


def gap_rows(model: ModelRow, w: MergedWindow, r: dict[str, Any] | None) -> list[Row]:
    """The generalization gap overall and per cohort (value: production minus validation
    error; the interval, the lines and the decision's gate in the detail)."""
    if r is None:
        return []
    parts = ([("generalization_gap", "", r["overall"])] if r["overall"] else []) + [
        ("cohort_generalization_gap", f"{c['cohort_key']}={c['cohort']}", c)
        for c in r["cohorts"]]
    return [_row("cohorts", model, w.version_id, metric, subject, w.start, w.end, g["n"],
                 g["gap"], g["decision"], g.get("method", "production vs validation error"),
                 {k: g.get(k) for k in ("production_error", "ci_low", "ci_high",
                                        "validation_error", "lines", "gate",
                                        "decision_reason", "horizon_seconds")})
            for metric, subject, g in parts]


def label_rows(model: ModelRow, w: MergedWindow, r: dict[str, Any]) -> list[Row]:
    return [
        _row("labels", model, w.version_id, "label_coverage", "", w.start, w.end, r["n"],
             r["label_coverage"], r["decision"], "labeled / predictions in window",
             {"thresholds": r.get("thresholds")}),
        _row("labels", model, w.version_id, "label_delay_p50_seconds", "", w.start, w.end,
             r["labeled"], r["label_delay_p50_seconds"], "ok", "median label - prediction time",
             None),
        _row("labels", model, w.version_id, "label_delay_p90_seconds", "", w.start, w.end,
             r["labeled"], r["label_delay_p90_seconds"], "ok", "p90 label - prediction time",
             None),
    ]
