"""Monitoring statistics: drift (PSI, KS), calibration, cohort error and weight statistics.

Pure functions over numpy arrays returning frozen dataclasses with JSON-safe ``to_dict()``.
Every result carries ``status`` ("ok", "insufficient_data", "invalid_input",
"unsupported_dtype") and a ``reason``; undefined values are None, never NaN or inf.
Definitions and conventions: docs/metrics.md.
"""

from app.monitoring._result import INSUFFICIENT_DATA, INVALID_INPUT, OK, UNSUPPORTED_DTYPE
from app.monitoring.binning import (
    Binning,
    CategoricalBinning,
    NumericBinning,
    SortedSample,
    binning_from_dict,
    fit_categorical_bins,
    fit_numeric_bins,
    missing_rate,
    sorted_sample,
)
from app.monitoring.calibration import (
    CalibrationResult,
    ReliabilityBin,
    calibration_binary,
    calibration_multiclass,
)
from app.monitoring.cohort import CohortReport, CohortStat, cohort_error, wilson_interval
from app.monitoring.drift import (
    FeatureDrift,
    KsResult,
    PsiResult,
    PsiThresholds,
    benjamini_hochberg,
    bonferroni,
    categorical_drift,
    correct_ks,
    drift_features,
    ks,
    ks_statistic,
    numeric_drift,
    psi,
)
from app.monitoring.weights import (
    NormDelta,
    TensorStats,
    WeightDelta,
    WeightFileError,
    WeightSummary,
    read_weight_file,
    summarise_weight_file,
    tensor_stats,
    weight_delta,
    weight_summary,
)

__all__ = [
    "INSUFFICIENT_DATA",
    "INVALID_INPUT",
    "OK",
    "UNSUPPORTED_DTYPE",
    "Binning",
    "CalibrationResult",
    "CategoricalBinning",
    "CohortReport",
    "CohortStat",
    "FeatureDrift",
    "KsResult",
    "NormDelta",
    "NumericBinning",
    "PsiResult",
    "PsiThresholds",
    "ReliabilityBin",
    "SortedSample",
    "TensorStats",
    "WeightDelta",
    "WeightFileError",
    "WeightSummary",
    "benjamini_hochberg",
    "binning_from_dict",
    "bonferroni",
    "calibration_binary",
    "calibration_multiclass",
    "categorical_drift",
    "cohort_error",
    "correct_ks",
    "drift_features",
    "fit_categorical_bins",
    "fit_numeric_bins",
    "ks",
    "ks_statistic",
    "missing_rate",
    "numeric_drift",
    "psi",
    "read_weight_file",
    "sorted_sample",
    "summarise_weight_file",
    "tensor_stats",
    "weight_delta",
    "weight_summary",
    "wilson_interval",
]
