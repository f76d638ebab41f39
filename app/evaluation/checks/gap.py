"""The generalization gap: a version's production error against the validation error its
training registered, overall and per registered cohort, decided on the production error's
95% interval so that a window worse by chance does not alert."""

from __future__ import annotations

from typing import Any

from app.evaluation.checks.cohorts import TASK
from app.evaluation.checks.declare import Check, Finding, Stores
from app.evaluation.policy import CRITICAL, OK, WARNING, Thresholds
from app.evaluation.windows import MergedWindow
from app.monitoring import INSUFFICIENT_DATA, mean_interval, wilson_interval
from app.storage.registry import ModelRow

GENERALIZATION_GAP = Check(
    "generalization_gap", "cohorts", "the production error's 95% interval above the "
    "registered validation error by more than a line (warning, critical)",
    ("gap_warning", "gap_critical"),
    (Stores("error_ratio", None, "Overall error rate of the window.", "modelmon_error_ratio",
            decides=False),
     Stores("error_mae", None, "Overall mean absolute error of the window (regression).",
            "modelmon_error_mae", decides=False),
     Stores("generalization_gap", None, "Production error of the window minus the "
            "validation error registered with the version.", "modelmon_generalization_gap"),
     Stores("cohort_generalization_gap", "cohort", "Production error minus the registered "
            "validation error, per cohort.")), labels=True)
CHECKS = (GENERALIZATION_GAP,)


def _gap(task: str, n: int, errors: float, squares: float, validation: float, min_n: int,
         th: Thresholds) -> dict[str, Any]:
    """Production error of n labeled predictions against a validation error: decided on the
    lower end of the production error's 95% interval (Wilson for a rate, normal for an
    MAE), so a window worse by chance does not alert."""
    lines = {"warning": validation + th.gap_warning, "critical": validation + th.gap_critical}
    out: dict[str, Any] = {"n": n, "validation_error": validation, "lines": lines,
                           "thresholds": {**th.stated(GENERALIZATION_GAP.knobs),
                                          "min_n": min_n},
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


def _overall(task: str, window: MergedWindow, validation: float,
             th: Thresholds) -> dict[str, Any]:
    o = window.outcome
    if o.errors is None or o.squares is None:
        return {**_gap(task, 0, 0.0, 0.0, validation, th.min_n, th),
                "decision_reason": "the window's overall error sums are not known "
                                   "(summaries written before they were kept)"}
    return _gap(task, o.labeled, o.errors, o.squares, validation, th.min_n, th)


def _cohort(task: str, window: MergedWindow, subject: str, validation: float,
            th: Thresholds) -> dict[str, Any]:
    key, _, value = subject.partition("=")
    c = window.outcome.cohorts.get(key)
    i = None if c is None else next(
        (j for j, name in enumerate(c.cohorts) if (name or "") == value), None)
    n, err, sq = (0, 0.0, 0.0) if c is None or i is None else (
        int(c.n[i]), float(c.first[i]), float(c.second[i]))
    return {"cohort_key": key, "cohort": value,
            **_gap(task, n, err, sq, validation, th.cohort_min_n, th)}


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
    return {"overall": None if overall is None else _overall(task, window, overall, th),
            "cohorts": [_cohort(task, window, s, per_cohort[s], th)
                        for s in sorted(per_cohort)]}


_DETAIL = ("production_error", "ci_low", "ci_high", "validation_error", "lines", "gate",
           "decision_reason", "horizon_seconds")


def findings(r: dict[str, Any] | None) -> list[Finding]:
    """The generalization gap overall and per cohort (value: production minus validation
    error; the interval, the lines and the decision's gate in the detail)."""
    if r is None:
        return []
    parts = ([("generalization_gap", "", r["overall"])] if r["overall"] else []) + [
        ("cohort_generalization_gap", f"{c['cohort_key']}={c['cohort']}", c)
        for c in r["cohorts"]]
    return [Finding(metric, subject, g["n"], g["gap"], g["decision"],
                    g.get("method", "production vs validation error"),
                    {k: g.get(k) for k in _DETAIL})
            for metric, subject, g in parts]
