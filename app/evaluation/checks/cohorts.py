"""Error per cohort against the rest of the traffic, so a failing cohort is not hidden by a
healthy average; and the window's overall error, stored beside it."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from app.evaluation.checks.declare import Check, Finding, Stores
from app.evaluation.policy import CRITICAL, OK, WARNING, Thresholds
from app.evaluation.windows import MergedWindow
from app.monitoring import INSUFFICIENT_DATA, CohortSums, cohort_from_sums
from app.monitoring.gates import bonferroni_adjust, cohort_vs_rest, mae_vs_rest
from app.storage.registry import ModelRow

TASK = {"binary_classification": "binary", "multiclass_classification": "multiclass",
        "regression": "regression"}
COHORT_ERROR = Check(
    "cohort_error", "cohorts", "a cohort's error above the rest's, one-sided test with "
    "Bonferroni across the key's cohorts (warning; critical also needs the ratio)",
    ("alpha_warning", "alpha_critical", "cohort_ratio_critical", "cohort_min_n"),
    (Stores("cohort_error_ratio", "cohort", "Error rate per cohort.", subject_state=True),
     Stores("cohort_mae", "cohort", "Mean absolute error per cohort.", subject_state=True)),
    labels=True)
CHECKS = (COHORT_ERROR,)


def _empty() -> CohortSums:
    return CohortSums((), np.zeros(0, np.int64), np.zeros(0), np.zeros(0))


def _key(task: str, sums: CohortSums, n_dropped: int, th: Thresholds) -> dict[str, Any]:
    r = cohort_from_sums(sums, task=task, min_n=th.cohort_min_n, n_dropped=n_dropped)
    d = r.to_dict()
    d["thresholds"] = th.stated(COHORT_ERROR.knobs)
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
    return d


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
    return {key: _key(task, o.cohorts.get(key) or _empty(), o.n - o.labeled,
                      (keys or {}).get(key, th))
            for key in model.cohort_keys}


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


def overall_findings(overall: dict[str, Any] | None) -> list[Finding]:
    """The overall error of the window (error_ratio, or error_mae for a regression)."""
    if overall is None:
        return []
    metric, value = (("error_mae", overall["mae"]) if overall["task"] == "regression"
                     else ("error_ratio", overall["error_rate"]))
    return [Finding(metric, "", overall["n"], value, "ok", f"{overall['task']} overall")]


_COHORT_DETAIL = ("ci_low", "ci_high", "decidable", "rmse", "delta_error_rate", "delta_mae",
                  "delta_rmse", "rest_error_rate", "rest_mae", "pvalue", "pvalue_adjusted",
                  "gate", "horizon_seconds")


def findings(report: dict[str, Any]) -> list[Finding]:
    """Per cohort (subject ``key=value``): its error rate (or MAE) and decision, with the
    interval, the test against the rest and the gate in its detail."""
    out: list[Finding] = []
    for key, r in report.items():
        regression = r["task"] == "regression"
        metric = "cohort_mae" if regression else "cohort_error_ratio"
        method = ("MAE; one-sided Welch test against the rest" if regression else
                  "Wilson 95% interval; one-sided test against the rest, Bonferroni")
        for c in r["cohorts"]:
            detail = {k: c.get(k) for k in _COHORT_DETAIL}
            detail["thresholds"] = r.get("thresholds")
            out.append(Finding(metric, f"{key}={'' if c['cohort'] is None else c['cohort']}",
                               c["n"], c.get("mae") if regression else c.get("error_rate"),
                               c["decision"], method, detail))
    return out
