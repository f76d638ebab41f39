"""Calibration of a classifier's scores against its labels: ECE (equal-width bins) against
the larger of its line and its noise quantile at the window's labeled n."""

from __future__ import annotations

import math
from typing import Any

from app.evaluation.checks.declare import Check, Finding, Stores, line
from app.evaluation.policy import CRITICAL, OK, WARNING, Thresholds
from app.evaluation.windows import MergedWindow
from app.monitoring import INSUFFICIENT_DATA, calibration_from_sums
from app.monitoring.calibration import empty_calibration
from app.monitoring.gates import ece_null_quantiles
from app.storage.registry import ModelRow

CALIBRATION = Check(
    "calibration", "calibration", "ECE above the larger of its line and its noise quantile "
    "(warning, critical)", ("alpha_warning", "alpha_critical", "ece_warning", "ece_critical",
                            "min_n", "calibration_bins"),
    (Stores("calibration_ece", None, "Expected calibration error.",
            "modelmon_calibration_ece_ratio"),
     Stores("calibration_mce", None, "Maximum calibration error.",
            "modelmon_calibration_mce_ratio", decides=False),
     Stores("calibration_brier", None, "Brier score.", "modelmon_calibration_brier_score",
            decides=False)), labels=True)
CHECKS = (CALIBRATION,)


def _too_small(out: dict[str, Any], n: int, q_warn: float, th: Thresholds) -> None:
    # ECE's noise shrinks about as 1 / sqrt(n): where it would meet the warning line
    # (none, for a warning line so small that no count of predictions reaches it)
    ratio = q_warn / th.ece_warning
    support = n * ratio * ratio
    need = math.ceil(support) if math.isfinite(support) else None
    out.update(decision=INSUFFICIENT_DATA, gate="min_support", min_support=need,
               decision_reason=(f"insufficient data: n={n}; a calibrated model's ECE reaches "
                                f"{q_warn:.3f} by chance at this n (quantile "
                                f"{1 - th.alpha_warning}), above the warning line "
                                f"{th.ece_warning}; about {need} labeled predictions are "
                                "needed (evaluate a longer window)"))


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
    out["thresholds"] = th.stated(CALIBRATION.knobs)
    if r.ece is None:
        out.update(decision=INSUFFICIENT_DATA, gate="min_n", decision_reason=r.reason)
        return out
    q_warn, q_crit = ece_null_quantiles(
        [b.count for b in r.bins], [b.mean_confidence or 0.0 for b in r.bins],
        [1 - th.alpha_warning, 1 - th.alpha_critical]).tolist()
    out["noise_quantile"] = {"warning": q_warn, "critical": q_crit}
    if q_warn > th.ece_warning:
        _too_small(out, r.n, q_warn, th)
        return out
    warn, warn_gate = line(th.ece_warning, q_warn)
    crit, crit_gate = line(th.ece_critical, q_crit)
    out["lines"] = {"warning": warn, "critical": crit}
    if r.ece > crit:
        out["decision"], out["gate"] = CRITICAL, crit_gate
    elif r.ece > warn:
        out["decision"], out["gate"] = WARNING, warn_gate
    else:
        out["decision"], out["gate"] = OK, warn_gate
    return out


def findings(r: dict[str, Any]) -> list[Finding]:
    """ECE (its decision, with the bins, gate and lines in its detail), MCE and Brier beside
    it; nothing for a regression."""
    if r.get("status") == "not_applicable":
        return []
    method = f"equal-width {r['n_bins']} bins, {r['kind']}"
    detail = {"bins": r["bins"], "status": r["status"], "reason": r["reason"],
              "gate": r.get("gate"), "noise_quantile": r.get("noise_quantile"),
              "lines": r.get("lines"), "min_support": r.get("min_support"),
              "decision_reason": r.get("decision_reason"),
              "horizon_seconds": r.get("horizon_seconds"), "thresholds": r.get("thresholds")}
    return [Finding(metric, "", r["n"], r[key], r["decision"], method,
                    detail if metric == "calibration_ece" else None)
            for metric, key in (("calibration_ece", "ece"), ("calibration_mce", "mce"),
                                ("calibration_brier", "brier"))]
