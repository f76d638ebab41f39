"""The generalization gap: a version's production error against the validation error its
training registered, overall and per registered cohort, decided like every other check: an
exact one-sided test of the production errors against validation + band (Fisher's exact
test against the validation counts where the validation rows are registered), at alpha / m
across the overall error and the cohorts tested, and only from ``gap_min_n`` labeled
predictions. The production error's 95% interval is reported beside it."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from app.evaluation.checks.cohorts import TASK
from app.evaluation.checks.declare import Check, Finding, Stores
from app.evaluation.policy import CRITICAL, OK, WARNING, Thresholds
from app.evaluation.windows import MergedWindow
from app.monitoring import INSUFFICIENT_DATA, mean_interval, wilson_interval
from app.monitoring.gates import binomial_excess, fisher_exact_test, mae_excess
from app.storage.registry import ModelRow

GENERALIZATION_GAP = Check(
    "generalization_gap", "cohorts", "the production error above the registered validation "
    "error + band, exact one-sided test at alpha / m across the overall error and the "
    "cohorts (warning, critical)",
    ("alpha_warning", "alpha_critical", "gap_warning", "gap_critical", "gap_min_n"),
    (Stores("error_ratio", None, "Overall error rate of the window.", "modelmon_error_ratio",
            decides=False),
     Stores("error_mae", None, "Overall mean absolute error of the window (regression).",
            "modelmon_error_mae", decides=False),
     *(Stores(f"realized_{m}", None, f"{label} of the window's labeled predictions: the "
              "realized value beside the estimate before labels (CBPE).",
              f"modelmon_realized_{m}_ratio", decides=False)
       for m, label in (("accuracy", "Accuracy"), ("precision", "Precision (macro, "
                        "multiclass)"), ("recall", "Recall (macro, multiclass)"),
                        ("f1", "F1 (macro, multiclass)"))),
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
    validation_rows: int | None = None
    pvalue: dict[str, float] | None = None
    subjects: int | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {} if self.cohort_key is None else {
            "cohort_key": self.cohort_key, "cohort": self.cohort}
        out.update(n=self.n, validation_error=self.validation_error,
                   validation_rows=self.validation_rows, lines=self.lines,
                   thresholds=self.thresholds, production_error=self.production_error,
                   ci_low=self.ci_low, ci_high=self.ci_high, gap=self.gap)
        if self.method is None:  # no labeled prediction: nothing was measured
            out.update(decision=self.decision, gate=self.gate,
                       decision_reason=self.decision_reason)
        else:
            out.update(method=self.method, gate=self.gate, decision=self.decision)
            if self.pvalue is not None:
                out.update(pvalue=self.pvalue, subjects=self.subjects)
            if self.decision_reason is not None:
                out["decision_reason"] = self.decision_reason
        if self.horizon_seconds is not None:
            out["horizon_seconds"] = self.horizon_seconds
        return out

    def detail(self) -> dict[str, Any]:
        """What its stored row states beside the gap and the decision."""
        return {"production_error": self.production_error, "ci_low": self.ci_low,
                "ci_high": self.ci_high, "validation_error": self.validation_error,
                "validation_rows": self.validation_rows, "pvalue": self.pvalue,
                "subjects": self.subjects, "lines": self.lines, "gate": self.gate,
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


@dataclass(frozen=True, slots=True)
class _Subject:
    """What one subject's gap is decided on: its labeled n and error sums, the registered
    validation error and, where registered, the rows it was measured on."""

    n: int
    errors: float
    squares: float
    validation: float
    validation_rows: int | None = None
    reason: str | None = None


def _pvalue(task: str, s: _Subject, band: float) -> tuple[float, str, str]:
    """(one-sided p-value of 'the production error exceeds validation + band', method,
    gate). Rates: Fisher's exact test against the validation's errors shifted by the band
    (round((v + band) x rows) of rows) where the rows are registered, since a validation
    error measured on a few hundred rows is itself noisy; else the exact binomial test
    against v + band. MAE: one-sided t test of the mean absolute error against v + band."""
    line = s.validation + band
    if task == "regression":
        p = mae_excess(s.n, s.errors, s.squares, line)
        return p, "MAE, one-sided t test against validation + band", "t_test"
    k = round(s.errors)
    if s.validation_rows:
        k_v = min(round(min(line, 1.0) * s.validation_rows), s.validation_rows)
        p = fisher_exact_test(k, s.n, k_v, s.validation_rows).pvalue
        return p, ("error rate, one-sided Fisher exact test against the validation "
                   "counts + band"), "fisher_exact"
    return (binomial_excess(k, s.n, min(line, 1.0)),
            "error rate, one-sided exact binomial test against validation + band",
            "binomial_exact")


def _gap(task: str, s: _Subject, subjects: int, th: Thresholds) -> GapResult:
    """The production error of n labeled predictions against validation + band: warning
    when the exact one-sided p-value at the warning band is below alpha_warning / m,
    critical at the critical band and alpha_critical / m, m the subjects (overall and
    cohorts) with at least ``gap_min_n`` labeled predictions."""
    v = s.validation
    lines = {"warning": v + th.gap_warning, "critical": v + th.gap_critical}
    thresholds = th.stated(GENERALIZATION_GAP.knobs)
    if s.n == 0:
        return GapResult(s.n, v, lines, thresholds, INSUFFICIENT_DATA, "min_n",
                         decision_reason=s.reason or "no labeled predictions in the window",
                         validation_rows=s.validation_rows)
    if task == "regression":
        production = s.errors / s.n
        low, high = mean_interval(s.n, s.errors, s.squares)
    else:
        production = round(s.errors) / s.n
        low, high = wilson_interval(round(s.errors), s.n)
    out = GapResult(s.n, v, lines, thresholds, INSUFFICIENT_DATA, "min_n", production, low,
                    high, production - v, validation_rows=s.validation_rows)
    if s.n < th.gap_min_n:  # the figures are reported, never decided on
        return replace(out, method=_pvalue(task, s, 0.0)[1], decision_reason=(
            f"insufficient data: {s.n} labeled predictions, below the minimum "
            f"{th.gap_min_n}"))
    p_warn, method, gate = _pvalue(task, s, th.gap_warning)
    p_crit = _pvalue(task, s, th.gap_critical)[0]
    m = max(subjects, 1)
    decision = (CRITICAL if p_crit < th.alpha_critical / m else
                WARNING if p_warn < th.alpha_warning / m else OK)
    return replace(out, method=f"{method}, Bonferroni across {m}", gate=gate,
                   decision=decision, pvalue={"warning": p_warn, "critical": p_crit},
                   subjects=m)


def _overall(window: MergedWindow, validation: float, rows: int | None) -> _Subject:
    o = window.outcome
    if o.errors is None or o.squares is None:
        return _Subject(0, 0.0, 0.0, validation, rows,
                        "the window's overall error sums are not known (summaries written "
                        "before they were kept)")
    return _Subject(o.labeled, o.errors, o.squares, validation, rows)


def _cohort(window: MergedWindow, subject: str, validation: float,
            rows: int | None) -> _Subject:
    key, _, value = subject.partition("=")
    c = window.outcome.cohorts.get(key)
    i = None if c is None else next(
        (j for j, name in enumerate(c.cohorts) if (name or "") == value), None)
    if c is None or i is None:
        return _Subject(0, 0.0, 0.0, validation, rows)
    return _Subject(int(c.n[i]), float(c.first[i]), float(c.second[i]), validation, rows)


def generalization_gap(model: ModelRow, window: MergedWindow, th: Thresholds,
                       training: dict[str, Any]) -> GapReport | None:
    """The version's production error against the validation error registered in its
    training block: overall (from the window's overall error sums, cohort keys or not) and
    per cohort with a registered ``cohort_validation_error``, each tested exactly against
    validation + band with Bonferroni across the subjects large enough to decide. None when
    the version registered neither."""
    overall = training.get("validation_error")
    per_cohort = training.get("cohort_validation_error") or {}
    if overall is None and not per_cohort:
        return None
    task = TASK[model.task]
    rows = training.get("cohort_validation_rows") or {}
    first = None if overall is None else _overall(window, overall,
                                                  training.get("validation_rows"))
    cohorts = [(subject, _cohort(window, subject, per_cohort[subject], rows.get(subject)))
               for subject in sorted(per_cohort)]
    m = sum(s.n >= th.gap_min_n for s in [*([first] if first else []),
                                          *(c for _, c in cohorts)])
    return GapReport(None if first is None else _gap(task, first, m, th),
                     tuple(replace(_gap(task, c, m, th), cohort_key=subject.partition("=")[0],
                                   cohort=subject.partition("=")[2])
                           for subject, c in cohorts))


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
