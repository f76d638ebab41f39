"""Drift of each feature and of the prediction against the reference: PSI on the reference's
bins with its chi-square evidence, KS D against the reference's sample (Benjamini-Hochberg
across features), decided per column with the data-quality column checks (quality.py) in the
same pass; every gate corrected for the m columns tested (the features and the prediction)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from app.evaluation.checks.declare import Check, Finding, Stores, line
from app.evaluation.checks.quality import COLUMN_CHECKS, ColumnWindow
from app.evaluation.policy import CRITICAL, OK, WARNING, Thresholds
from app.evaluation.summaries import ColumnLayout, CompiledProfile, DriftSummary
from app.evaluation.windows import MergedWindow
from app.monitoring import INSUFFICIENT_DATA, PsiThresholds, correct_ks, ks_from_counts, psi
from app.monitoring.gates import (
    bonferroni_adjust,
    ks_noise_quantile,
    psi_evidence,
    psi_min_support,
    psi_noise_quantile,
)

_KNOBS = ("alpha_warning", "alpha_critical", "psi_moderate", "psi_major", "psi_warning",
          "psi_critical", "ks_d", "ks_alpha", "min_n")
FEATURE_DRIFT = Check(
    "feature_drift", "drift", "PSI above its line with chi-square evidence (warning, "
    "critical), or KS D above its line (warning)", _KNOBS,
    (Stores("feature_psi", "feature", "PSI of the latest window against the reference.",
            "modelmon_feature_psi", subject_state=True),
     Stores("feature_ks_statistic", "feature", "Two-sample KS D against the reference.",
            "modelmon_feature_ks_statistic")))
PREDICTION_DRIFT = Check(
    "prediction_drift", "drift", "the prediction's PSI and KS, decided as a feature's",
    _KNOBS,
    (Stores("prediction_psi", None, "PSI of the prediction.", "modelmon_prediction_psi"),
     Stores("prediction_ks_statistic", None, "KS D of the prediction.",
            "modelmon_prediction_ks_statistic")))
CHECKS = (FEATURE_DRIFT, PREDICTION_DRIFT, *(c.check for c in COLUMN_CHECKS))
# The thresholds every column states: the drift knobs, then the column checks' own.
STATED = tuple(dict.fromkeys(k for c in CHECKS for k in c.knobs))


def _psi_gate(col: ColumnLayout, total: int, th: Thresholds, m: int) -> dict[str, Any]:
    """Minimum support and the warning and critical lines of one column's PSI at n=total."""
    n_ref = int(sum(col.reference_counts))
    bins = sum(1 for c in col.reference_counts if c > 0)
    support = psi_min_support(th.psi_moderate, n_ref, bins, th.alpha_warning, m)
    out: dict[str, Any] = {"min_support": support, "columns_tested": m}
    if total <= 0 or n_ref <= 0:
        return out
    warn, warn_gate = line(th.psi_warning, psi_noise_quantile(
        total, n_ref, bins, th.alpha_warning, m))
    crit, crit_gate = line(th.psi_critical, psi_noise_quantile(
        total, n_ref, bins, th.alpha_critical, m))
    out["lines"] = {"warning": warn, "warning_gate": warn_gate, "critical": crit,
                    "critical_gate": crit_gate}
    return out


def _window(col: ColumnLayout, d: DriftSummary) -> ColumnWindow:
    return ColumnWindow(col, d.slice(col.psi_offset, col.psi_slots),
                        d.slice(col.ks_offset, col.ks.n_slots) if col.ks is not None else None)


def _column(col: ColumnLayout, d: DriftSummary, th: Thresholds, m: int) -> dict[str, Any]:
    cw = _window(col, d)
    cur_counts, total = cw.counts, cw.total
    p = psi(col.reference_counts, cur_counts,
            thresholds=PsiThresholds(th.psi_moderate, th.psi_major), min_n=th.min_n)
    n_ref_total = cw.n_reference_total
    out: dict[str, Any] = {
        "feature": col.name, "type": col.kind, "psi": p.value, "psi_band": p.band,
        "ks_statistic": None, "ks_pvalue": None, "ks_pvalue_adjusted": None,
        "missing_rate": float(cur_counts[-1] / total) if total else None,
        "reference_missing_rate": col.n_reference_missing / n_ref_total if n_ref_total else None,
        "n_reference": col.n_reference_valid, "n_current": cw.n_valid,
        "bins": list(col.binning.labels()), "reference_counts": list(col.reference_counts),
        "current_counts": cur_counts.tolist(), "status": p.status, "reason": p.reason,
        "psi_gate": _psi_gate(col, total, th, m), "thresholds": th.stated(STATED),
        "psi_pvalue": (psi_evidence(col.reference_counts, cur_counts)
                       if p.value is not None else None),
    }
    for check in COLUMN_CHECKS:
        if check.applies(col):
            out.update(check.evaluate(cw, out, th, m))
    if col.ks is not None:
        out.update(_ks(cw, th, m))
    return out


def _ks(cw: ColumnWindow, th: Thresholds, m: int) -> dict[str, Any]:
    """KS D against the reference's sample, its line the larger of the D floor and D's noise
    quantile at the window's n (the `_ks` result is corrected across features later)."""
    col, n_valid = cw.col, cw.n_valid
    assert col.ks is not None and cw.ks_slots is not None
    n_sample = int(col.ks.sample.shape[0])
    d_line, d_gate = (th.ks_d, "threshold")
    if n_valid > 0 and n_sample > 0:
        d_line, d_gate = line(th.ks_d, ks_noise_quantile(n_valid, n_sample,
                                                         th.alpha_warning, m))
    k = ks_from_counts(col.ks, cw.ks_slots, n_cur_missing=int(cw.counts[-1]),
                       d_threshold=d_line, alpha=th.ks_alpha, min_n=th.min_n)
    return {"_ks": k, "n_reference_sample": k.n_ref, "ks_threshold": d_line, "ks_gate": d_gate}


def _insufficient(row: dict[str, Any], th: Thresholds) -> str | None:
    """The gate and reason when the column cannot be decided (set on the row), else None."""
    gate = row["psi_gate"]
    if row["status"] == INSUFFICIENT_DATA or row["psi"] is None:
        row["gate"], row["decision_reason"] = "min_n", row["reason"]
        return INSUFFICIENT_DATA
    n = sum(row["current_counts"])
    if row["missing_rate"] == 1.0 and (row["reference_missing_rate"] or 0.0) < 1.0:
        row["gate"] = "all_missing"
        row["decision_reason"] = ("every value is missing in this window: a data-quality "
                                  "failure (see the missing rate), not drift")
        return INSUFFICIENT_DATA
    support = gate["min_support"]
    if support is None or n < support:
        row["gate"] = "min_support"
        row["decision_reason"] = (
            f"insufficient data: n={n}, below the minimum support "
            f"{'(none with this reference)' if support is None else support} at which a PSI "
            f"of {th.psi_moderate} stands out from sampling noise (alpha {th.alpha_warning} "
            f"across {gate['columns_tested']} columns); evaluate a longer window")
        return INSUFFICIENT_DATA
    return None


def _decide(row: dict[str, Any], th: Thresholds) -> str:
    """Sets the row's gate (the rule that applied) and returns its decision."""
    undecided = _insufficient(row, th)
    if undecided is not None:
        return undecided
    lines, m = row["psi_gate"]["lines"], row["psi_gate"]["columns_tested"]
    # evidence: the chi-square test PSI's noise model stands for, Bonferroni across columns
    p = bonferroni_adjust(row["psi_pvalue"], m)
    if row["psi"] > lines["critical"] and p < th.alpha_critical:
        row["gate"] = lines["critical_gate"]
        return CRITICAL
    if row["psi"] > lines["warning"] and p < th.alpha_warning:
        row["gate"] = lines["warning_gate"]
        return WARNING
    if row.get("ks_drift"):
        row["gate"] = f"ks_{row['ks_gate']}"
        return WARNING
    row["gate"] = "psi_evidence" if row["psi"] > lines["warning"] else lines["warning_gate"]
    return OK


def drift(window: MergedWindow, cp: CompiledProfile, th: Thresholds,
          features: Mapping[str, Thresholds] | None = None,
          importance: dict[str, float | None] | None = None) -> dict[str, Any]:
    """Per feature PSI, KS (Benjamini-Hochberg across features), the column checks,
    decision; and the same for the prediction. ``features`` holds the thresholds of features
    whose policy overrides the model's; each column states the thresholds it applied. Each
    feature carries its importance share in the version's weights (``importance``; None when
    unknown): drift of a feature the version does not use (0) is low immediate risk, and the
    alert rules route it as a ticket."""
    d = window.drift if window.drift is not None else DriftSummary(
        cp.key, 0, np.zeros(cp.size, dtype=np.int64))
    m = len(cp.columns)
    of = features or {}
    rows = [_column(col, d, of.get(col.name, th), m) for col in cp.columns
            if not col.is_prediction]
    corrected = correct_ks({r["feature"]: r["_ks"] for r in rows if "_ks" in r}, "bh")
    for r in rows:
        k = corrected.get(r["feature"], r.pop("_ks", None))
        r.pop("_ks", None)
        if k is not None:
            r.update(ks_statistic=k.statistic, ks_pvalue=k.pvalue,
                     ks_pvalue_adjusted=k.pvalue_adjusted, ks_drift=bool(k.drift))
        r["decision"] = _decide(r, of.get(r["feature"], th))
        r["importance"] = None if importance is None else importance.get(r["feature"])
    pred = None
    prediction = next((col for col in cp.columns if col.is_prediction), None)
    if prediction is not None:
        pred = _column(prediction, d, th, m)
        k = pred.pop("_ks", None)
        if k is not None:
            pred.update(ks_statistic=k.statistic, ks_pvalue=k.pvalue, ks_drift=bool(k.drift))
        pred["decision"] = _decide(pred, th)
    return {"n": window.n, "features": rows, "prediction": pred}


def _psi_detail(f: dict[str, Any]) -> dict[str, Any]:
    """The band, the gate that decided and the lines it used, as the report states them."""
    return {"band": f["psi_band"], "gate": f.get("gate"),
            "decision_reason": f.get("decision_reason"),
            "horizon_seconds": f.get("horizon_seconds"),
            "min_support": f["psi_gate"].get("min_support"),
            "lines": f["psi_gate"].get("lines"), "thresholds": f["thresholds"],
            "reference_counts": f["reference_counts"], "current_counts": f["current_counts"],
            "bins": f["bins"]}


def _ks_detail(f: dict[str, Any]) -> dict[str, Any]:
    return {"pvalue": f["ks_pvalue"], "threshold": f.get("ks_threshold"),
            "gate": f.get("ks_gate"), "thresholds": f["thresholds"]}


def findings(report: dict[str, Any], reference: dict[str, Any]) -> list[Finding]:
    """What the drift job stores: per feature its PSI (with its decision), each column
    check's figure and decision, and for a numeric feature its KS D; the same PSI and KS for
    the prediction."""
    ref = reference.get("source", "none")
    psi_method = f"psi eps=1e-4 ref={ref}, noise gate chi2 x (1/n + 1/n_ref)"
    ks_method = (f"ks_2samp two-sided, BH across features, ref={ref} sample, D line max(floor, "
                 "noise quantile)")
    out: list[Finding] = []
    for f in report["features"]:
        name, n = f["feature"], f["n_current"]
        out.append(Finding("feature_psi", name, n, f["psi"], f["decision"], psi_method,
                           {**_psi_detail(f), "importance": f.get("importance")}))
        out += [Finding(c.metric, name, n, f[c.value], f[c.decision], c.method, c.detail(f))
                for c in COLUMN_CHECKS if f.get(c.decision) is not None]
        if f["type"] == "numeric":
            out.append(Finding("feature_ks_statistic", name, n, f["ks_statistic"],
                               f["decision"], ks_method,
                               {**_ks_detail(f), "pvalue_adjusted": f["ks_pvalue_adjusted"]}))
    p = report["prediction"]
    if p is not None:
        out.append(Finding("prediction_psi", "", p["n_current"], p["psi"], p["decision"],
                           psi_method, _psi_detail(p)))
        if p["type"] == "numeric":
            out.append(Finding("prediction_ks_statistic", "", p["n_current"],
                               p["ks_statistic"], p["decision"], ks_method, _ks_detail(p)))
    return out
