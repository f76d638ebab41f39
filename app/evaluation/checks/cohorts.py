"""Error per cohort against the rest of the traffic, so a failing cohort is not hidden by a
healthy average; and the window's overall error, stored beside it."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from app.evaluation.checks.declare import Check, Finding, Stores
from app.evaluation.policy import CRITICAL, OK, WARNING, Thresholds
from app.evaluation.windows import MergedWindow
from app.monitoring import INSUFFICIENT_DATA, CohortSums, cohort_from_sums
from app.monitoring.cohort import CohortStat
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


@dataclass(frozen=True, slots=True)
class CohortResult:
    """One cohort's error (``stat``) and its decision: tested against the rest of the
    traffic (``rest``: the rest's error rate, or MAE for a regression; the p-values across
    the key's tested cohorts), or ``min_n`` when it was too small to test."""

    stat: CohortStat
    decision: str
    gate: str
    rest: float | None = None
    pvalue: float | None = None
    pvalue_adjusted: float | None = None
    cohorts_tested: int | None = None
    horizon_seconds: float | None = None

    @property
    def cohort(self) -> str | None:
        return self.stat.cohort

    @property
    def rest_metric(self) -> str:
        return "rest_mae" if self.gate == "welch_test" else "rest_error_rate"

    def to_dict(self) -> dict[str, Any]:
        out = self.stat.to_dict()
        if self.gate == "min_n":
            out.update(decision=self.decision, gate=self.gate)
        else:
            out.update({self.rest_metric: self.rest, "pvalue": self.pvalue,
                        "pvalue_adjusted": self.pvalue_adjusted,
                        "cohorts_tested": self.cohorts_tested, "gate": self.gate,
                        "decision": self.decision})
        if self.horizon_seconds is not None:
            out["horizon_seconds"] = self.horizon_seconds
        return out

    def detail(self) -> dict[str, Any]:
        """What its stored row states beside the error and the decision."""
        s, rest = self.stat, None if self.gate == "min_n" else self.rest_metric
        return {"ci_low": s.ci_low, "ci_high": s.ci_high, "decidable": s.decidable,
                "rmse": s.rmse, "delta_error_rate": s.delta_error_rate,
                "delta_mae": s.delta_mae, "delta_rmse": s.delta_rmse,
                "rest_error_rate": self.rest if rest == "rest_error_rate" else None,
                "rest_mae": self.rest if rest == "rest_mae" else None,
                "pvalue": self.pvalue, "pvalue_adjusted": self.pvalue_adjusted,
                "gate": self.gate, "horizon_seconds": self.horizon_seconds}


@dataclass(frozen=True, slots=True)
class CohortKeyReport:
    """The cohorts of one key: the key's figures as cohort_from_sums gives them (its overall
    row among them), each cohort decided, and the thresholds stated."""

    key: str
    status: str
    reason: str
    task: str
    n: int
    n_dropped: int
    min_n: int
    threshold: float | None
    overall: CohortStat | None
    cohorts: tuple[CohortResult, ...]
    thresholds: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return {"status": self.status, "reason": self.reason, "task": self.task,
                "n": int(self.n), "n_dropped": int(self.n_dropped), "min_n": int(self.min_n),
                "threshold": None if self.threshold is None else float(self.threshold),
                "overall": None if self.overall is None else self.overall.to_dict(),
                "cohorts": [c.to_dict() for c in self.cohorts], "thresholds": self.thresholds}


@dataclass(frozen=True, slots=True)
class CohortsReport:
    """The cohort error of a window, per cohort key in the model's order."""

    keys: tuple[CohortKeyReport, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {k.key: k.to_dict() for k in self.keys}


@dataclass(frozen=True, slots=True)
class OverallError:
    """The window's error over its labeled predictions: the error rate, or MAE and RMSE for
    a regression."""

    task: str
    n: int
    error_rate: float | None = None
    mae: float | None = None
    rmse: float | None = None

    def to_dict(self) -> dict[str, Any]:
        if self.task == "regression":
            return {"task": self.task, "n": self.n, "mae": self.mae, "rmse": self.rmse}
        return {"task": self.task, "n": self.n, "error_rate": self.error_rate}


def _empty() -> CohortSums:
    return CohortSums((), np.zeros(0, np.int64), np.zeros(0), np.zeros(0))


def _key(key: str, task: str, sums: CohortSums, n_dropped: int, th: Thresholds
         ) -> CohortKeyReport:
    r = cohort_from_sums(sums, task=task, min_n=th.cohort_min_n, n_dropped=n_dropped)
    decidable = {c.cohort for c in r.cohorts if c.decidable}
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
    out: list[CohortResult] = []
    for c in r.cohorts:
        t = tests.get(c.cohort)
        if not c.decidable or t is None:
            out.append(CohortResult(c, INSUFFICIENT_DATA, "min_n"))
            continue
        i = index[c.cohort]
        rest_n = total_n - int(sums.n[i])
        rest = (total_err - float(sums.first[i])) / rest_n if rest_n else None
        p_adj = bonferroni_adjust(t.pvalue, m)
        value = float(getattr(c, metric))
        ratio_ok = rest is not None and value >= th.cohort_ratio_critical * rest
        decision = (CRITICAL if p_adj < th.alpha_critical and ratio_ok
                    else WARNING if p_adj < th.alpha_warning else OK)
        out.append(CohortResult(c, decision, gate, rest, t.pvalue, p_adj, m))
    return CohortKeyReport(key, r.status, r.reason, r.task, r.n, r.n_dropped, r.min_n,
                           r.threshold, r.overall, tuple(out),
                           th.stated(COHORT_ERROR.knobs))


def cohorts(model: ModelRow, window: MergedWindow, th: Thresholds,
            keys: Mapping[str, Thresholds] | None = None) -> CohortsReport:
    """Per cohort key: each decidable cohort's error against the rest of the traffic, one
    sided, Bonferroni across the key's decidable cohorts (error rates: Fisher's exact
    test; regression: Welch's test on the absolute errors); a warning at
    alpha_warning, critical at alpha_critical with an error rate (or MAE) at least
    ``cohort_ratio_critical`` times the rest's. ``keys`` holds the thresholds of cohort keys
    whose policy overrides the model's."""
    task = TASK[model.task]
    o = window.outcome
    return CohortsReport(tuple(
        _key(key, task, o.cohorts.get(key) or _empty(), o.n - o.labeled,
             (keys or {}).get(key, th))
        for key in model.cohort_keys))


def overall_error(model: ModelRow, window: MergedWindow) -> OverallError | None:
    """The window's error over its labeled predictions (error rate, or MAE and RMSE for a
    regression), from the outcome's overall error sums, whether or not the model has cohort
    keys; None when the window has no labeled prediction or its sums are not known."""
    o = window.outcome
    if o.labeled == 0 or o.errors is None or o.squares is None:
        return None
    task = TASK[model.task]
    if task == "regression":
        return OverallError(task, o.labeled, mae=o.errors / o.labeled,
                            rmse=math.sqrt(o.squares / o.labeled))
    return OverallError(task, o.labeled, error_rate=round(o.errors) / o.labeled)


def overall_findings(overall: OverallError | None) -> list[Finding]:
    """The overall error of the window (error_ratio, or error_mae for a regression)."""
    if overall is None:
        return []
    metric, value = (("error_mae", overall.mae) if overall.task == "regression"
                     else ("error_ratio", overall.error_rate))
    return [Finding(metric, "", overall.n, value, "ok", f"{overall.task} overall")]


def findings(report: CohortsReport) -> list[Finding]:
    """Per cohort (subject ``key=value``): its error rate (or MAE) and decision, with the
    interval, the test against the rest and the gate in its detail."""
    out: list[Finding] = []
    for r in report.keys:
        regression = r.task == "regression"
        metric = "cohort_mae" if regression else "cohort_error_ratio"
        method = ("MAE; one-sided Welch test against the rest" if regression else
                  "Wilson 95% interval; one-sided test against the rest, Bonferroni")
        for c in r.cohorts:
            detail = {**c.detail(), "thresholds": r.thresholds}
            out.append(Finding(metric, f"{r.key}={'' if c.cohort is None else c.cohort}",
                               c.stat.n, c.stat.mae if regression else c.stat.error_rate,
                               c.decision, method, detail))
    return out
