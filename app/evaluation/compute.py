"""The computations behind every job and report, over one version's merged window.

Jobs store these results per window; the REST reports call the same functions on demand,
so a report over a stored window equals the stored values. Everything here reads the sums
of a window's bucket summaries (app/evaluation/summaries.py), never raw rows.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, replace
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
    mean_interval,
    psi,
    wilson_interval,
)
from app.monitoring.binning import CategoricalBinning
from app.monitoring.calibration import empty_calibration
from app.monitoring.gates import (
    binomial_excess,
    bonferroni_adjust,
    cohort_vs_rest,
    ece_null_quantiles,
    fisher_exact_test,
    ks_noise_quantile,
    mae_vs_rest,
    out_of_range_null,
    psi_evidence,
    psi_min_support,
    psi_noise_quantile,
)
from app.settings import Settings
from app.storage.registry import ModelRow

OK, WARNING, CRITICAL = "ok", "warning", "critical"
TASK = {"binary_classification": "binary", "multiclass_classification": "multiclass",
        "regression": "regression"}


@dataclass(frozen=True)
class Thresholds:
    alpha_warning: float = 1e-3
    alpha_critical: float = 1e-4
    psi_moderate: float = 0.1
    psi_major: float = 0.25
    psi_warning: float = 0.015
    psi_critical: float = 0.15
    ks_d: float = 0.05
    ks_alpha: float = 0.05
    min_n: int = 100
    ece_warning: float = 0.05
    ece_critical: float = 0.1
    cohort_ratio_critical: float = 1.5
    cohort_min_n: int = 100
    missing_rise: float = 0.1
    out_of_range_rise: float = 0.02
    new_category_rise: float = 0.02
    coverage_warning: float = 0.5
    calibration_bins: int = 10
    gap_warning: float = 0.02
    gap_critical: float = 0.05
    sparsity_jump_warning: float = 0.1
    sparsity_jump_critical: float = 0.2
    norm_jump_warning: float = 0.5

    @classmethod
    def from_settings(cls, s: Settings) -> Thresholds:
        return cls(**{k: getattr(s, f"threshold_{k}") for k in cls.__dataclass_fields__})

    def overlay(self, overrides: Mapping[str, Any]) -> Thresholds:
        """These thresholds with the fields ``overrides`` names replaced (other keys are
        not thresholds and are ignored)."""
        mine = {k: v for k, v in overrides.items() if k in self.__dataclass_fields__}
        return replace(self, **mine) if mine else self

    def stated(self, fields: tuple[str, ...]) -> dict[str, Any]:
        """The values of ``fields``, as a report or a stored row states what it applied."""
        return {k: getattr(self, k) for k in fields if k in self.__dataclass_fields__}


# The thresholds each decision reads, stated with it in reports and stored results.
DRIFT_FIELDS = ("alpha_warning", "alpha_critical", "psi_moderate", "psi_major", "psi_warning",
                "psi_critical", "ks_d", "ks_alpha", "min_n", "missing_rise", "out_of_range_rise",
                "new_category_rise")
CALIBRATION_FIELDS = ("alpha_warning", "alpha_critical", "ece_warning", "ece_critical",
                      "min_n", "calibration_bins")
COHORT_FIELDS = ("alpha_warning", "alpha_critical", "cohort_ratio_critical", "cohort_min_n")
LABEL_FIELDS = ("min_n", "coverage_warning")
GAP_FIELDS = ("gap_warning", "gap_critical")
VERSION_FIELDS = ("sparsity_jump_warning", "sparsity_jump_critical", "norm_jump_warning")
# What a model's policy may set per feature and per cohort key: the effect sizes and
# minimum n. The error rates (alpha) stay the model's: they are corrected across the columns
# or cohorts tested together.
PER_FEATURE_FIELDS = ("psi_moderate", "psi_major", "psi_warning", "psi_critical", "ks_d",
                      "min_n", "missing_rise", "out_of_range_rise", "new_category_rise")
PER_COHORT_KEY_FIELDS = ("cohort_ratio_critical", "cohort_min_n")


def version_checks(overall: Mapping[str, Any], th: Thresholds) -> dict[str, dict[str, Any]]:
    """The decisions on a version's overall weight delta to its predecessor (the stored
    ``overall`` of a delta): ``sparsity_jump`` on the absolute sparsity change as a ratio,
    ``norm_jump`` on the larger absolute relative change of the L1 and L2 norms. Decided when
    read (compare report, /metrics) with the model's current policy, so a PATCH of the policy
    changes both; a figure that is missing or not finite is insufficient data."""
    def finite(x: Any) -> bool:
        return isinstance(x, int | float) and math.isfinite(x)

    sp = overall.get("sparsity_change_pp")
    sparsity = abs(sp) / 100 if finite(sp) else None
    norms = {n: abs(overall[f"{n}_relative_change"]) for n in ("l1", "l2")
             if finite(overall.get(f"{n}_relative_change"))}
    norm = max(norms, key=norms.__getitem__) if norms else None
    out = {"sparsity_jump": {"value": sparsity, "lines": {
        "warning": th.sparsity_jump_warning, "critical": th.sparsity_jump_critical}},
           "norm_jump": {"value": norms[norm] if norm else None, "norm": norm,
                         "lines": {"warning": th.norm_jump_warning}}}
    for check in out.values():
        v, lines = check["value"], check["lines"]
        check["decision"] = (INSUFFICIENT_DATA if v is None
                             else CRITICAL if "critical" in lines and v > lines["critical"]
                             else WARNING if v > lines["warning"] else OK)
    return out


def _line(threshold: float, noise: float) -> tuple[float, str]:
    """The line a statistic must pass: the larger of the effect threshold and the noise
    quantile, and the name of the one that applied."""
    return (noise, "noise_quantile") if noise > threshold else (threshold, "threshold")


def _psi_gate(col: ColumnLayout, total: int, th: Thresholds, m: int) -> dict[str, Any]:
    """Minimum support and the warning and critical lines of one column's PSI at n=total."""
    n_ref = int(sum(col.reference_counts))
    bins = sum(1 for c in col.reference_counts if c > 0)
    support = psi_min_support(th.psi_moderate, n_ref, bins, th.alpha_warning, m)
    out: dict[str, Any] = {"min_support": support, "columns_tested": m}
    if total <= 0 or n_ref <= 0:
        return out
    warn, warn_gate = _line(th.psi_warning, psi_noise_quantile(
        total, n_ref, bins, th.alpha_warning, m))
    crit, crit_gate = _line(th.psi_critical, psi_noise_quantile(
        total, n_ref, bins, th.alpha_critical, m))
    out["lines"] = {"warning": warn, "warning_gate": warn_gate, "critical": crit,
                    "critical_gate": crit_gate}
    return out


def _column_drift(col: ColumnLayout, d: DriftSummary, th: Thresholds, m: int) -> dict[str, Any]:
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
        "psi_gate": _psi_gate(col, total, th, m), "thresholds": th.stated(DRIFT_FIELDS),
        "psi_pvalue": (psi_evidence(col.reference_counts, cur_counts)
                       if p.value is not None else None),
    }
    out["missing_decision"] = _decide_missing(out, total, n_ref_total, th, m)
    n_valid = total - int(cur_counts[-1])
    if not col.is_prediction:
        out.update(_unseen_values(col, d, cur_counts, n_valid, th, m))
    if col.ks is not None:
        n_sample = int(col.ks.sample.shape[0])
        d_line, d_gate = (th.ks_d, "threshold")
        if n_valid > 0 and n_sample > 0:
            d_line, d_gate = _line(th.ks_d, ks_noise_quantile(n_valid, n_sample,
                                                              th.alpha_warning, m))
        k = ks_from_counts(col.ks, d.slice(col.ks_offset, col.ks.n_slots),
                           n_cur_missing=int(cur_counts[-1]), d_threshold=d_line,
                           alpha=th.ks_alpha, min_n=th.min_n)
        out["_ks"] = k
        out["n_reference_sample"] = k.n_ref
        out["ks_threshold"] = d_line
        out["ks_gate"] = d_gate
    return out


def _unseen_values(col: ColumnLayout, d: DriftSummary, cur_counts: np.ndarray, n_valid: int,
                   th: Thresholds, m: int) -> dict[str, Any]:
    """Data quality, apart from drift: values the reference never had. Numeric: the share of
    the window's values outside the reference's observed [min, max] (the first and last KS
    slots, since the KS sample keeps the reference's extremes), against the noise of a range
    fitted on n_ref draws; categorical: the share in no reference category (the unseen bin,
    which also holds the reference's own folded rare categories) against the reference's share
    there. A warning (a ticket) when the share exceeds its baseline by the rise threshold and
    beyond noise (one-sided, Bonferroni across the columns); never critical: a change large
    enough to page shows as drift too."""
    if col.ks is not None and col.ks.points.shape[0] > 0:
        slots = d.slice(col.ks_offset, col.ks.n_slots)
        k = int(slots[0] + slots[-1])
        null = out_of_range_null(col.n_reference_valid, th.alpha_warning, m)
        out: dict[str, Any] = {
            "out_of_range_rate": k / n_valid if n_valid else None,
            "out_of_range_null": null}
        out["out_of_range_decision"] = _decide_share(
            k, n_valid, null, th.out_of_range_rise,
            lambda: binomial_excess(k, n_valid, null), th, m)
        return out
    if isinstance(col.binning, CategoricalBinning):
        u = col.binning.unseen_index
        k, ref_k = int(cur_counts[u]), int(col.reference_counts[u])
        n_ref = col.n_reference_valid
        base = ref_k / n_ref if n_ref else 0.0
        out = {"new_category_rate": k / n_valid if n_valid else None,
               "reference_new_category_rate": base if n_ref else None}
        out["new_category_decision"] = _decide_share(
            k, n_valid, base, th.new_category_rise,
            lambda: fisher_exact_test(k, n_valid, ref_k, n_ref).pvalue, th, m)
        return out
    return {}


def _decide_share(k: int, n: int, base: float, rise: float, pvalue: Any, th: Thresholds,
                  m: int) -> str:
    """Warning when k of n exceeds the baseline share by ``rise`` and ``pvalue()`` (one
    sided) stays below alpha_warning after Bonferroni across the m columns."""
    if n < th.min_n:
        return INSUFFICIENT_DATA
    if k / n - base < rise:
        return OK
    return WARNING if bonferroni_adjust(pvalue(), m) < th.alpha_warning else OK


def _decide_missing(row: dict[str, Any], total: int, n_ref_total: int, th: Thresholds,
                    m: int) -> str:
    """Data quality, apart from drift: critical when every value of the window is missing
    (and the reference had values), warning when the missing rate rose by at least
    ``missing_rise`` and beyond noise (one-sided Fisher exact test, Bonferroni across the
    columns)."""
    rate, ref_rate = row["missing_rate"], row["reference_missing_rate"]
    if total < th.min_n or rate is None or ref_rate is None:
        return INSUFFICIENT_DATA
    if rate == 1.0 and ref_rate < 1.0:
        return CRITICAL
    k, ref_k = round(rate * total), round(ref_rate * n_ref_total)
    return _decide_share(k, total, ref_rate, th.missing_rise,
                         lambda: fisher_exact_test(k, total, ref_k, n_ref_total).pvalue,
                         th, m)


def _decide_drift(row: dict[str, Any], th: Thresholds) -> str:
    """Sets the row's gate (the rule that applied) and returns its decision."""
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
    lines = gate["lines"]
    # evidence: the chi-square test PSI's noise model stands for, Bonferroni across columns
    p = bonferroni_adjust(row["psi_pvalue"], gate["columns_tested"])
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
    """Per feature PSI, KS (Benjamini-Hochberg across features), missing rate, decision; and
    the same for the prediction. Every column's gates are corrected for the m columns
    tested (the features and the prediction). ``features`` holds the thresholds of features
    whose policy overrides the model's; each column states the thresholds it applied. Each
    feature carries its importance share in the version's weights (``importance``; None when
    unknown): drift of a feature the version does not use (0) is low immediate risk, and the
    alert rules route it as a ticket."""
    d = window.drift if window.drift is not None else DriftSummary(
        cp.key, 0, np.zeros(cp.size, dtype=np.int64))
    m = len(cp.columns)
    of = features or {}
    rows = [_column_drift(col, d, of.get(col.name, th), m) for col in cp.columns
            if not col.is_prediction]
    corrected = correct_ks({r["feature"]: r["_ks"] for r in rows if "_ks" in r}, "bh")
    for r in rows:
        k = corrected.get(r["feature"], r.pop("_ks", None))
        r.pop("_ks", None)
        if k is not None:
            r.update(ks_statistic=k.statistic, ks_pvalue=k.pvalue,
                     ks_pvalue_adjusted=k.pvalue_adjusted, ks_drift=bool(k.drift))
        r["decision"] = _decide_drift(r, of.get(r["feature"], th))
        r["importance"] = None if importance is None else importance.get(r["feature"])
    pred = None
    prediction = next((col for col in cp.columns if col.is_prediction), None)
    if prediction is not None:
        pred = _column_drift(prediction, d, th, m)
        k = pred.pop("_ks", None)
        if k is not None:
            pred.update(ks_statistic=k.statistic, ks_pvalue=k.pvalue, ks_drift=bool(k.drift))
        pred["decision"] = _decide_drift(pred, th)
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
    out["thresholds"] = th.stated(CALIBRATION_FIELDS)
    if r.ece is None:
        out.update(decision=INSUFFICIENT_DATA, gate="min_n", decision_reason=r.reason)
        return out
    q_warn, q_crit = ece_null_quantiles(
        [b.count for b in r.bins], [b.mean_confidence or 0.0 for b in r.bins],
        [1 - th.alpha_warning, 1 - th.alpha_critical]).tolist()
    out["noise_quantile"] = {"warning": q_warn, "critical": q_crit}
    if q_warn > th.ece_warning:
        # ECE's noise shrinks about as 1 / sqrt(n): where it would meet the warning line
        # (none, for a warning line so small that no count of predictions reaches it)
        ratio = q_warn / th.ece_warning
        support = r.n * ratio * ratio
        need = math.ceil(support) if math.isfinite(support) else None
        out.update(decision=INSUFFICIENT_DATA, gate="min_support", min_support=need,
                   decision_reason=(f"insufficient data: n={r.n}; a calibrated model's ECE reaches "
                           f"{q_warn:.3f} by chance at this n (quantile {1 - th.alpha_warning}"
                           f"), above the warning line {th.ece_warning}; about {need} labeled "
                           "predictions are needed (evaluate a longer window)"))
        return out
    warn, warn_gate = _line(th.ece_warning, q_warn)
    crit, crit_gate = _line(th.ece_critical, q_crit)
    out["lines"] = {"warning": warn, "critical": crit}
    if r.ece > crit:
        out["decision"], out["gate"] = CRITICAL, crit_gate
    elif r.ece > warn:
        out["decision"], out["gate"] = WARNING, warn_gate
    else:
        out["decision"], out["gate"] = OK, warn_gate
    return out


def cohorts(model: ModelRow, window: MergedWindow, th: Thresholds,
            keys: Mapping[str, Thresholds] | None = None) -> dict[str, Any]:
    """Per cohort key: each decidable cohort's error against the rest of the traffic, one
    sided, Bonferroni across the key's decidable cohorts (error rates: Fisher's exact
    test; regression: Welch's test on the absolute errors); a warning at
    alpha_warning, critical at alpha_critical with an error rate (or MAE) at least
    ``cohort_ratio_critical`` times the rest's. ``keys`` holds the thresholds of cohort keys
    whose policy overrides the model's."""
    task = TASK[model.task]
    o = window.outcome
    out: dict[str, Any] = {}
    model_th = th
    for key in model.cohort_keys:
        th = (keys or {}).get(key, model_th)
        sums = o.cohorts.get(key) or CohortSums((), np.zeros(0, np.int64), np.zeros(0),
                                                np.zeros(0))
        r = cohort_from_sums(sums, task=task, min_n=th.cohort_min_n,
                             n_dropped=o.n - o.labeled)
        d = r.to_dict()
        d["thresholds"] = th.stated(COHORT_FIELDS)
        decidable = {c["cohort"] for c in d["cohorts"] if c["decidable"]}
        tested = [name in decidable for name in sums.cohorts]
        if task == "regression":
            results = mae_vs_rest(sums.n, sums.first, sums.second, tested)
            gate, metric = "welch_test", "mae"
        else:
            results = cohort_vs_rest(sums.first.round(), sums.n, tested)
            gate, metric = "fisher_exact", "error_rate"
        tests = dict(zip(sums.cohorts, results, strict=True))
        index = {name: i for i, name in enumerate(sums.cohorts)}
        m = len(decidable)
        total_n, total_err = int(sums.n.sum()), float(sums.first.sum())
        for c in d["cohorts"]:
            t = tests.get(c["cohort"])
            if not c["decidable"] or t is None:
                c["decision"], c["gate"] = INSUFFICIENT_DATA, "min_n"
                continue
            i = index[c["cohort"]]
            rest_n = total_n - int(sums.n[i])
            rest = (total_err - float(sums.first[i])) / rest_n if rest_n else None
            p_adj = bonferroni_adjust(t.pvalue, m)
            c.update({f"rest_{metric}": rest, "pvalue": t.pvalue, "pvalue_adjusted": p_adj,
                      "cohorts_tested": m, "gate": gate})
            ratio_ok = rest is not None and c[metric] >= th.cohort_ratio_critical * rest
            c["decision"] = (CRITICAL if p_adj < th.alpha_critical and ratio_ok
                             else WARNING if p_adj < th.alpha_warning else OK)
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
        "thresholds": th.stated(LABEL_FIELDS),
    }


def _gap(task: str, n: int, errors: float, squares: float, validation: float, min_n: int,
         th: Thresholds) -> dict[str, Any]:
    """Production error of n labeled predictions against a validation error: decided on the
    lower end of the production error's 95% interval (Wilson for a rate, normal for an
    MAE), so a window worse by chance does not alert."""
    lines = {"warning": validation + th.gap_warning, "critical": validation + th.gap_critical}
    out: dict[str, Any] = {"n": n, "validation_error": validation, "lines": lines,
                           "thresholds": {**th.stated(GAP_FIELDS), "min_n": min_n},
                           "production_error": None, "ci_low": None, "ci_high": None,
                           "gap": None}
    if n == 0:
        out.update(decision=INSUFFICIENT_DATA, gate="min_n",
                   decision_reason="no labeled predictions in the window")
        return out
    if task == "regression":
        production = errors / n
        low, high = mean_interval(n, errors, squares)
        out["method"] = "MAE, normal 95% interval"
    else:
        k = round(errors)
        production = k / n
        low, high = wilson_interval(k, n)
        out["method"] = "error rate, Wilson 95% interval"
    out.update(production_error=production, ci_low=low, ci_high=high,
               gap=production - validation, gate="interval_lower_bound")
    if n < min_n:  # the figures are reported, never decided on
        out.update(decision=INSUFFICIENT_DATA, gate="min_n",
                   decision_reason=f"insufficient data: {n} labeled predictions, below "
                                   f"the minimum {min_n}")
        return out
    out["decision"] = (CRITICAL if low > lines["critical"] else
                       WARNING if low > lines["warning"] else OK)
    return out


def overall_error(model: ModelRow, window: MergedWindow) -> dict[str, Any] | None:
    """The window's error over its labeled predictions (error rate, or MAE and RMSE for a
    regression), from the outcome's overall error sums, whether or not the model has cohort
    keys; None when the window has no labeled prediction or its sums are not known."""
    o = window.outcome
    if o.labeled == 0 or o.errors is None or o.squares is None:
        return None
    task = TASK[model.task]
    if task == "regression":
        return {"task": task, "n": o.labeled, "mae": o.errors / o.labeled,
                "rmse": math.sqrt(o.squares / o.labeled)}
    return {"task": task, "n": o.labeled, "error_rate": round(o.errors) / o.labeled}


def generalization_gap(model: ModelRow, window: MergedWindow, th: Thresholds,
                       training: dict[str, Any]) -> dict[str, Any] | None:
    """The version's production error against the validation error registered in its
    training block: overall (from the window's overall error sums, cohort keys or not) and
    per cohort with a registered ``cohort_validation_error``. None when the version
    registered neither."""
    overall = training.get("validation_error")
    per_cohort = training.get("cohort_validation_error") or {}
    if overall is None and not per_cohort:
        return None
    task = TASK[model.task]
    sums = window.outcome.cohorts
    out: dict[str, Any] = {"overall": None, "cohorts": []}
    o = window.outcome
    if overall is not None:
        if o.errors is None or o.squares is None:
            out["overall"] = {**_gap(task, 0, 0.0, 0.0, overall, th.min_n, th),
                              "decision_reason": "the window's overall error sums are not "
                                                 "known (summaries written before they were "
                                                 "kept)"}
        else:
            out["overall"] = _gap(task, o.labeled, o.errors, o.squares, overall, th.min_n, th)
    for subject in sorted(per_cohort):
        key, _, value = subject.partition("=")
        c = sums.get(key)
        i = None if c is None else next(
            (j for j, name in enumerate(c.cohorts) if (name or "") == value), None)
        n, err, sq = (0, 0.0, 0.0) if i is None else (
            int(c.n[i]), float(c.first[i]), float(c.second[i]))  # type: ignore[union-attr]
        out["cohorts"].append({"cohort_key": key, "cohort": value,
                               **_gap(task, n, err, sq, per_cohort[subject],
                                      th.cohort_min_n, th)})
    return out
