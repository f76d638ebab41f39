"""The computations behind every job and report, over one version's merged window.

Jobs store these results per window; the REST reports call the same functions on demand,
so a report over a stored window equals the stored values. Everything here reads the sums
of a window's bucket summaries (app/evaluation/summaries.py), never raw rows.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from app.evaluation.summaries import ColumnLayout, CompiledProfile, DriftSummary
from app.evaluation.windows import MergedWindow
from app.monitoring import (
    INSUFFICIENT_DATA,
    CohortSums,
    PsiThresholds,
    calibration_from_sums,
    cohort_from_sums,
    correct_ks,
    ks_from_counts,
    psi,
)
from app.monitoring.calibration import empty_calibration
from app.settings import Settings
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


def _column_drift(col: ColumnLayout, d: DriftSummary, th: Thresholds) -> dict[str, Any]:
    cur_counts = d.slice(col.psi_offset, col.psi_slots)
    p = psi(col.reference_counts, cur_counts,
            thresholds=PsiThresholds(th.psi_moderate, th.psi_major), min_n=th.min_n)
    total = int(cur_counts.sum())
    n_ref_total = col.n_reference_valid + col.n_reference_missing
    out: dict[str, Any] = {
        "feature": col.name, "type": col.kind, "psi": p.value, "psi_band": p.band,
        "ks_statistic": None, "ks_pvalue": None, "ks_pvalue_adjusted": None,
        "missing_rate": float(cur_counts[-1] / total) if total else None,
        "reference_missing_rate": col.n_reference_missing / n_ref_total if n_ref_total else None,
        "n_reference": col.n_reference_valid, "n_current": total - int(cur_counts[-1]),
        "bins": list(col.binning.labels()), "reference_counts": list(col.reference_counts),
        "current_counts": cur_counts.tolist(), "status": p.status, "reason": p.reason,
    }
    if col.ks is not None:
        k = ks_from_counts(col.ks, d.slice(col.ks_offset, col.ks.n_slots),
                           n_cur_missing=int(cur_counts[-1]), d_threshold=th.ks_d,
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


def drift(window: MergedWindow, cp: CompiledProfile, th: Thresholds) -> dict[str, Any]:
    """Per feature PSI, KS (Benjamini-Hochberg across features), missing rate, decision; and
    the same for the prediction."""
    d = window.drift if window.drift is not None else DriftSummary(
        cp.key, 0, np.zeros(cp.size, dtype=np.int64))
    rows = [_column_drift(col, d, th) for col in cp.columns if not col.is_prediction]
    corrected = correct_ks({r["feature"]: r["_ks"] for r in rows if "_ks" in r}, "bh")
    for r in rows:
        k = corrected.get(r["feature"], r.pop("_ks", None))
        r.pop("_ks", None)
        if k is not None:
            r.update(ks_statistic=k.statistic, ks_pvalue=k.pvalue,
                     ks_pvalue_adjusted=k.pvalue_adjusted, ks_drift=bool(k.drift))
        r["decision"] = _decide_drift(r)
    pred = None
    prediction = next((col for col in cp.columns if col.is_prediction), None)
    if prediction is not None:
        pred = _column_drift(prediction, d, th)
        k = pred.pop("_ks", None)
        if k is not None:
            pred.update(ks_statistic=k.statistic, ks_pvalue=k.pvalue, ks_drift=bool(k.drift))
        pred["decision"] = _decide_drift(pred)
    return {"n": window.n, "features": rows, "prediction": pred}


def calibration(model: ModelRow, window: MergedWindow, th: Thresholds,
                n_bins: int | None = None) -> dict[str, Any]:
    bins = n_bins or th.calibration_bins
    o = window.outcome
    coverage = o.labeled / o.n if o.n else None
    if model.task == "regression":
        return {"status": "not_applicable", "reason": "calibration applies to classification",
                "n": o.labeled, "label_coverage": coverage, "decision": OK}
    kind = "binary" if model.task == "binary_classification" else "multiclass"
    sums = o.calibration or empty_calibration(len(model.classes or ()))
    r = calibration_from_sums(kind, sums, bins, min_n=th.min_n)
    out = r.to_dict()
    out["label_coverage"] = coverage
    if r.ece is None:
        out["decision"] = INSUFFICIENT_DATA
    else:
        out["decision"] = (CRITICAL if r.ece > th.ece_critical
                           else WARNING if r.ece > th.ece_warning else OK)
    return out


def cohorts(model: ModelRow, window: MergedWindow, th: Thresholds) -> dict[str, Any]:
    task = TASK[model.task]
    o = window.outcome
    out: dict[str, Any] = {}
    for key in model.cohort_keys:
        sums = o.cohorts.get(key) or CohortSums((), np.zeros(0, np.int64), np.zeros(0),
                                                np.zeros(0))
        r = cohort_from_sums(sums, task=task, min_n=th.cohort_min_n,
                             n_dropped=o.n - o.labeled)
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


def label_stats(window: MergedWindow, th: Thresholds) -> dict[str, Any]:
    """Coverage is exact; delay quantiles come from a KLL sketch (exact up to 200 labels,
    within KLL_RANK_ERROR in rank above)."""
    o = window.outcome
    n, labeled = o.n, o.labeled
    coverage = labeled / n if n else None
    sketch = o.delays

    def q(rank: float) -> float | None:
        return None if sketch is None or sketch.is_empty() else float(
            sketch.get_quantile(rank, True))

    return {
        "n": n, "labeled": labeled, "label_coverage": coverage,
        "label_delay_p50_seconds": q(0.5), "label_delay_p90_seconds": q(0.9),
        "decision": (INSUFFICIENT_DATA if n < th.min_n or coverage is None
                     else WARNING if coverage < th.coverage_warning else OK),
    }
