"""The generalization gap: a version's production error against the validation error its
training registered, overall and per registered cohort, decided on the production error's
95% interval so that a window worse by chance does not alert."""

from __future__ import annotations

from dataclasses import dataclass, replace
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


@dataclass(frozen=True, slots=True)
class GapResult:
    """The production error of one subject (the version overall, or one registered cohort:
    ``cohort_key`` and ``cohort``) against its registered validation error: the error, its
    95% interval and the gap (None without labeled predictions), the lines, and the
    decision with its gate; ``horizon_seconds`` when decided over the longer horizon."""

    n: int
    validation_error: float
    lines: dict[str, float]
    thresholds: dict[str, Any]
    decision: str
    gate: str
    production_error: float | None = None
    ci_low: float | None = None
    ci_high: float | None = None
    gap: float | None = None
    method: str | None = None
    decision_reason: str | None = None
    cohort_key: str | None = None
    cohort: str | None = None
    horizon_seconds: float | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {} if self.cohort_key is None else {
            "cohort_key": self.cohort_key, "cohort": self.cohort}
        out.update(n=self.n, validation_error=self.validation_error, lines=self.lines,
                   thresholds=self.thresholds, production_error=self.production_error,
                   ci_low=self.ci_low, ci_high=self.ci_high, gap=self.gap)
        if self.method is None:  # no labeled prediction: nothing was measured
            out.update(decision=self.decision, gate=self.gate,
                       decision_reason=self.decision_reason)
        else:
            out.update(method=self.method, gate=self.gate, decision=self.decision)
            if self.decision_reason is not None:
                out["decision_reason"] = self.decision_reason
        if self.horizon_seconds is not None:
            out["horizon_seconds"] = self.horizon_seconds
        return out

    def detail(self) -> dict[str, Any]:
        """What its stored row states beside the gap and the decision."""
        return {"production_error": self.production_error, "ci_low": self.ci_low,
                "ci_high": self.ci_high, "validation_error": self.validation_error,
                "lines": self.lines, "gate": self.gate,
                "decision_reason": self.decision_reason,
                "horizon_seconds": self.horizon_seconds}


@dataclass(frozen=True, slots=True)
class GapReport:
    """The generalization gap of a window: overall (None when the version registered no
    overall validation error) and per registered cohort."""

    overall: GapResult | None
    cohorts: tuple[GapResult, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"overall": None if self.overall is None else self.overall.to_dict(),
                "cohorts": [c.to_dict() for c in self.cohorts]}


def _gap(task: str, n: int, errors: float, squares: float, validation: float, min_n: int,
         th: Thresholds) -> GapResult:
    """Production error of n labeled predictions against a validation error: decided on the
    lower end of the production error's 95% interval (Wilson for a rate, normal for an
    MAE), so a window worse by chance does not alert."""
    lines = {"warning": validation + th.gap_warning, "critical": validation + th.gap_critical}
    thresholds = {**th.stated(GENERALIZATION_GAP.knobs), "min_n": min_n}
    if n == 0:
        return GapResult(n, validation, lines, thresholds, INSUFFICIENT_DATA, "min_n",
                         decision_reason="no labeled predictions in the window")
    if task == "regression":
        production = errors / n
        low, high = mean_interval(n, errors, squares)
        method = "MAE, normal 95% interval"
    else:
        k = round(errors)
        production = k / n
        low, high = wilson_interval(k, n)
        method = "error rate, Wilson 95% interval"
    out = GapResult(n, validation, lines, thresholds, OK, "interval_lower_bound",
                    production, low, high, production - validation, method)
    if n < min_n:  # the figures are reported, never decided on
        return replace(out, decision=INSUFFICIENT_DATA, gate="min_n",
                       decision_reason=f"insufficient data: {n} labeled predictions, below "
                                       f"the minimum {min_n}")
    return replace(out, decision=(CRITICAL if low > lines["critical"] else
                                  WARNING if low > lines["warning"] else OK))


def _overall(task: str, window: MergedWindow, validation: float,
             th: Thresholds) -> GapResult:
    o = window.outcome
    if o.errors is None or o.squares is None:
        return replace(_gap(task, 0, 0.0, 0.0, validation, th.min_n, th),
                       decision_reason="the window's overall error sums are not known "
                                       "(summaries written before they were kept)")
    return _gap(task, o.labeled, o.errors, o.squares, validation, th.min_n, th)


def _cohort(task: str, window: MergedWindow, subject: str, validation: float,
            th: Thresholds) -> GapResult:
    key, _, value = subject.partition("=")
    c = window.outcome.cohorts.get(key)
    i = None if c is None else next(
        (j for j, name in enumerate(c.cohorts) if (name or "") == value), None)
    n, err, sq = (0, 0.0, 0.0) if c is None or i is None else (
        int(c.n[i]), float(c.first[i]), float(c.second[i]))
    return replace(_gap(task, n, err, sq, validation, th.cohort_min_n, th), cohort_key=key,
                   cohort=value)


def generalization_gap(model: ModelRow, window: MergedWindow, th: Thresholds,
                       training: dict[str, Any]) -> GapReport | None:
    """The version's production error against the validation error registered in its
    training block: overall (from the window's overall error sums, cohort keys or not) and
    per cohort with a registered ``cohort_validation_error``. None when the version
    registered neither."""
    overall = training.get("validation_error")
    per_cohort = training.get("cohort_validation_error") or {}
    if overall is None and not per_cohort:
        return None
    task = TASK[model.task]
    return GapReport(None if overall is None else _overall(task, window, overall, th),
                     tuple(_cohort(task, window, s, per_cohort[s], th)
                           for s in sorted(per_cohort)))


def findings(r: GapReport | None) -> list[Finding]:
    """The generalization gap overall and per cohort (value: production minus validation
    error; the interval, the lines and the decision's gate in the detail)."""
    if r is None:
        return []
    parts = ([("generalization_gap", "", r.overall)] if r.overall else []) + [
        ("cohort_generalization_gap", f"{c.cohort_key}={c.cohort}", c) for c in r.cohorts]
    return [Finding(metric, subject, g.n, g.gap, g.decision,
                    g.method or "production vs validation error", g.detail())
            for metric, subject, g in parts]
