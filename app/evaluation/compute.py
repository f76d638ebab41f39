"""The computations behind every job and report, over one version's window.

Jobs store these results per window; the REST reports call the same functions on demand,
so a report over a stored window equals the stored values.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from app.evaluation.profiles import binning_of, prediction_column
from app.monitoring import (
    INSUFFICIENT_DATA,
    PsiThresholds,
    calibration_binary,
    calibration_multiclass,
    cohort_error,
    correct_ks,
    ks,
    psi,
)
from app.settings import Settings
from app.storage.observations import Window
from app.storage.registry import ModelRow

OK, WARNING, CRITICAL = "ok", "warning", "critical"
TASK = {"binary_classification": "binary", "multiclass_classification": "multiclass",
        "regression": "regression"}


@dataclass(frozen=True)
class Thresholds:
    psi_moderate: float = 0.1
    psi_major: float = 0.25
    ks_d: float = 0.1
    ks_alpha: float = 0.05
    min_n: int = 100
    ece_warning: float = 0.05
    ece_critical: float = 0.1
    cohort_delta_warning: float = 0.1
    cohort_delta_critical: float = 0.2
    cohort_min_n: int = 100
    coverage_warning: float = 0.5
    calibration_bins: int = 10

    @classmethod
    def from_settings(cls, s: Settings) -> Thresholds:
        return cls(**{k: getattr(s, f"threshold_{k}") for k in cls.__dataclass_fields__})


def _column_drift(name: str, column: dict[str, Any], values: np.ndarray,
                  th: Thresholds) -> dict[str, Any]:
    binning = binning_of(column)
    cur_counts = binning.counts(values)
    p = psi(column["counts"], cur_counts, thresholds=PsiThresholds(th.psi_moderate, th.psi_major),
            min_n=th.min_n)
    n_cur = int(cur_counts.sum() - cur_counts[-1])
    out: dict[str, Any] = {
        "feature": name, "type": column["type"], "psi": p.value, "psi_band": p.band,
        "ks_statistic": None, "ks_pvalue": None, "ks_pvalue_adjusted": None,
        "missing_rate": float(cur_counts[-1] / cur_counts.sum()) if cur_counts.sum() else None,
        "reference_missing_rate": (column["n_missing"] / (column["n_valid"] + column["n_missing"])
                                   if column["n_valid"] + column["n_missing"] else None),
        "n_reference": column["n_valid"], "n_current": n_cur,
        "bins": list(binning.labels()), "reference_counts": column["counts"],
        "current_counts": cur_counts.tolist(), "status": p.status, "reason": p.reason,
    }
    if column["type"] == "numeric":
        k = ks(np.asarray(column["sample"], dtype=np.float64), values, d_threshold=th.ks_d,
               alpha=th.ks_alpha, min_n=th.min_n)
        out["_ks"] = k
        out["n_reference_sample"] = k.n_ref
    return out


def _decide_drift(row: dict[str, Any]) -> str:
    if row["status"] == INSUFFICIENT_DATA or row["psi"] is None:
        return INSUFFICIENT_DATA
    if row["psi_band"] == "major":
        return CRITICAL
    if row["psi_band"] == "moderate" or row.get("ks_drift"):
        return WARNING
    return OK


def drift(model: ModelRow, w: Window, profile: dict[str, Any], th: Thresholds) -> dict[str, Any]:
    """Per feature PSI, KS (Benjamini-Hochberg across features), missing rate, decision; and
    the same for the prediction."""
    rows = [_column_drift(name, col, w.features.get(name, np.empty(0)), th)
            for name, col in profile["features"].items()]
    corrected = correct_ks({r["feature"]: r["_ks"] for r in rows if "_ks" in r}, "bh")
    for r in rows:
        k = corrected.get(r["feature"], r.pop("_ks", None))
        r.pop("_ks", None)
        if k is not None:
            r.update(ks_statistic=k.statistic, ks_pvalue=k.pvalue,
                     ks_pvalue_adjusted=k.pvalue_adjusted, ks_drift=bool(k.drift))
        r["decision"] = _decide_drift(r)
    pred = None
    if profile.get("prediction"):
        kind, values = prediction_column(model, w)
        pred = _column_drift("prediction", profile["prediction"], values, th)
        k = pred.pop("_ks", None)
        if k is not None:
            pred.update(ks_statistic=k.statistic, ks_pvalue=k.pvalue, ks_drift=bool(k.drift))
        pred["decision"] = _decide_drift(pred)
    return {"n": w.n, "features": rows, "prediction": pred}


def _labels_for(model: ModelRow, w: Window) -> np.ndarray:
    """Ground truth as numbers: 0/1 (binary), class index (multiclass), value (regression);
    NaN where unlabeled."""
    if model.task == "regression":
        return w.label_value if w.label_value is not None else np.empty(0)
    classes = model.classes or []
    lc = w.label_class if w.label_class is not None else np.empty(0, dtype=object)
    if model.task == "binary_classification":
        positive = classes[1]
        return np.array([np.nan if c is None else float(c == positive) for c in lc])
    index = {c: i for i, c in enumerate(classes)}
    return np.array([np.nan if c is None else float(index[c]) for c in lc])


def calibration(model: ModelRow, w: Window, th: Thresholds, n_bins: int | None = None
                ) -> dict[str, Any]:
    bins = n_bins or th.calibration_bins
    y = _labels_for(model, w)
    labeled = ~np.isnan(y) if y.size else np.zeros(0, dtype=bool)
    coverage = float(labeled.mean()) if w.n else None
    if model.task == "regression":
        return {"status": "not_applicable", "reason": "calibration applies to classification",
                "n": int(labeled.sum()), "label_coverage": coverage, "decision": OK}
    if model.task == "binary_classification":
        r = calibration_binary(w.score[labeled], y[labeled], bins, min_n=th.min_n)
    else:
        r = calibration_multiclass(w.probabilities[labeled], y[labeled], bins, min_n=th.min_n)
    out = r.to_dict()
    out["label_coverage"] = coverage
    if r.ece is None:
        out["decision"] = INSUFFICIENT_DATA
    else:
        out["decision"] = (CRITICAL if r.ece > th.ece_critical
                           else WARNING if r.ece > th.ece_warning else OK)
    return out


def cohorts(model: ModelRow, w: Window, th: Thresholds) -> dict[str, Any]:
    task = TASK[model.task]
    y = _labels_for(model, w)
    preds = {"binary": w.score, "multiclass": w.probabilities, "regression": w.value}[task]
    out: dict[str, Any] = {}
    for key in model.cohort_keys:
        r = cohort_error(w.cohorts[key], preds, y, task=task, min_n=th.cohort_min_n)
        d = r.to_dict()
        for c in d["cohorts"]:
            delta = c.get("delta_error_rate")
            if not c["decidable"] or delta is None:
                c["decision"] = OK if c["decidable"] else INSUFFICIENT_DATA
            else:
                c["decision"] = (CRITICAL if delta > th.cohort_delta_critical
                                 else WARNING if delta > th.cohort_delta_warning else OK)
        out[key] = d
    return out


def label_stats(w: Window, th: Thresholds) -> dict[str, Any]:
    n = w.n
    labeled = int(w.labeled.sum()) if w.labeled is not None else 0
    delays = w.label_delay_seconds if w.label_delay_seconds is not None else np.empty(0)
    coverage = labeled / n if n else None
    return {
        "n": n, "labeled": labeled, "label_coverage": coverage,
        "label_delay_p50_seconds": float(np.median(delays)) if delays.size else None,
        "label_delay_p90_seconds": float(np.quantile(delays, 0.9)) if delays.size else None,
        "decision": (INSUFFICIENT_DATA if n < th.min_n or coverage is None
                     else WARNING if coverage < th.coverage_warning else OK),
    }
