"""The one catalogue of stored metric names: what each job stores in `metric_results`, and
what a row's `subject` is. The jobs' result rows, the history report and the docs read it."""

from __future__ import annotations

from typing import NamedTuple


class StoredMetric(NamedTuple):
    job: str
    subject: str | None  # "feature", "cohort" ("key=value") or None (model level)
    description: str


METRICS: dict[str, StoredMetric] = {
    "feature_psi": StoredMetric("drift", "feature", "PSI against the reference bins"),
    "feature_ks_statistic": StoredMetric("drift", "feature",
                                         "KS D against the reference sample (numeric)"),
    "feature_missing_ratio": StoredMetric("drift", "feature", "share of missing values"),
    "prediction_psi": StoredMetric("drift", None, "PSI of the prediction"),
    "prediction_ks_statistic": StoredMetric("drift", None, "KS D of the prediction (numeric)"),
    "calibration_ece": StoredMetric("calibration", None, "expected calibration error"),
    "calibration_mce": StoredMetric("calibration", None, "maximum calibration error"),
    "calibration_brier": StoredMetric("calibration", None, "Brier score"),
    "error_ratio": StoredMetric("cohorts", None, "overall error rate (classification)"),
    "error_mae": StoredMetric("cohorts", None, "overall mean absolute error (regression)"),
    "cohort_error_ratio": StoredMetric("cohorts", "cohort", "error rate per cohort"),
    "cohort_mae": StoredMetric("cohorts", "cohort", "mean absolute error per cohort"),
    "label_coverage": StoredMetric("labels", None, "labeled share of the predictions"),
    "label_delay_p50_seconds": StoredMetric("labels", None, "median label delay (KLL sketch)"),
    "label_delay_p90_seconds": StoredMetric("labels", None, "p90 label delay (KLL sketch)"),
}
