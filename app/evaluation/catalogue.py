"""The one catalogue of stored metric names: what each job stores in `metric_results`, what a
row's `subject` is, and how /metrics exports it. The jobs' result rows, the history report,
/metrics and the docs (held equal by a test) all read it."""

from __future__ import annotations

from typing import NamedTuple


class StoredMetric(NamedTuple):
    job: str
    subject: str | None  # "feature", "cohort" ("key=value") or None (model level)
    description: str
    gauge: str | None = None  # the /metrics gauge of its latest value, if exported as such
    check: str | None = None  # the health check its decision feeds on /metrics
    # its decision is also exported per subject (modelmon_feature_check_state or
    # modelmon_cohort_check_state), so a page names its feature or cohort
    subject_state: bool = False


M = StoredMetric
METRICS: dict[str, StoredMetric] = {
    "feature_psi": M("drift", "feature", "PSI of the latest window against the reference.",
                     "modelmon_feature_psi", "feature_drift", subject_state=True),
    "feature_ks_statistic": M("drift", "feature", "Two-sample KS D against the reference.",
                              "modelmon_feature_ks_statistic", "feature_drift"),
    "feature_missing_ratio": M("drift", "feature", "Share of missing values.",
                               "modelmon_feature_missing_ratio", "data_quality",
                               subject_state=True),
    "feature_out_of_range_ratio": M("drift", "feature", "Share of a numeric feature's values "
                                    "outside the reference's observed [min, max].",
                                    "modelmon_feature_out_of_range_ratio", "out_of_range",
                                    subject_state=True),
    "feature_new_category_ratio": M("drift", "feature", "Share of a categorical feature's "
                                    "values in no reference category.",
                                    "modelmon_feature_new_category_ratio", "new_category",
                                    subject_state=True),
    "prediction_psi": M("drift", None, "PSI of the prediction.", "modelmon_prediction_psi",
                        "prediction_drift"),
    "prediction_ks_statistic": M("drift", None, "KS D of the prediction.",
                                 "modelmon_prediction_ks_statistic", "prediction_drift"),
    "calibration_ece": M("calibration", None, "Expected calibration error.",
                         "modelmon_calibration_ece_ratio", "calibration"),
    "calibration_mce": M("calibration", None, "Maximum calibration error.",
                         "modelmon_calibration_mce_ratio"),
    "calibration_brier": M("calibration", None, "Brier score.",
                           "modelmon_calibration_brier_score"),
    "error_ratio": M("cohorts", None, "Overall error rate of the window.",
                     "modelmon_error_ratio"),
    "error_mae": M("cohorts", None, "Overall mean absolute error of the window (regression).",
                   "modelmon_error_mae"),
    "cohort_error_ratio": M("cohorts", "cohort", "Error rate per cohort.", None,
                            "cohort_error", subject_state=True),
    "cohort_mae": M("cohorts", "cohort", "Mean absolute error per cohort.", None,
                    "cohort_error", subject_state=True),
    "generalization_gap": M("cohorts", None, "Production error of the window minus the "
                            "validation error registered with the version.",
                            "modelmon_generalization_gap", "generalization_gap"),
    "cohort_generalization_gap": M("cohorts", "cohort", "Production error minus the registered "
                                   "validation error, per cohort.", None,
                                   "generalization_gap"),
    "label_coverage": M("labels", None, "Share of predictions with a label.",
                        "modelmon_label_coverage_ratio", "label_coverage"),
    "label_delay_p50_seconds": M("labels", None, "Median prediction-to-label delay (KLL "
                                 "sketch).", "modelmon_label_delay_p50_seconds"),
    "label_delay_p90_seconds": M("labels", None, "90th percentile prediction-to-label delay "
                                 "(KLL sketch).", "modelmon_label_delay_p90_seconds"),
}
