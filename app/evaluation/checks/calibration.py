"""Calibration of a classifier's scores against its labels: ECE (equal-width bins) against
the larger of its line and its noise quantile at the window's labeled n; and beside it the
observed against the expected positives (O / E with a Poisson-binomial test), which sees a
miscalibration at any base rate (ECE of a 2% model stays under about 0.02 whatever its
scores do)."""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any

from app.evaluation.checks.declare import Check, Finding, Stores, line
from app.evaluation.policy import CRITICAL, OK, WARNING, Thresholds
from app.evaluation.windows import MergedWindow
from app.monitoring import INSUFFICIENT_DATA, calibration_from_sums
from app.monitoring.calibration import CalibrationResult, CalibrationSums, empty_calibration
from app.monitoring.expected import ObservedExpected, observed_expected
from app.monitoring.gates import ece_null_quantiles
from app.storage.registry import ModelRow

CALIBRATION = Check(
    "calibration", "calibration", "ECE above the larger of its line and its noise quantile; "
    "observed / expected positives beyond a factor with a Poisson-binomial p-value below "
    "alpha (warning, critical)", ("alpha_warning", "alpha_critical", "ece_warning",
                                  "ece_critical", "min_n", "calibration_bins",
                                  "oe_log_warning", "oe_log_critical",
                                  "cohort_min_n"),
    (Stores("calibration_ece", None, "Expected calibration error.",
            "modelmon_calibration_ece_ratio"),
     Stores("calibration_oe_ratio", None, "Observed over expected positives (correct top "
            "labels, multiclass): 1 when calibrated.", "modelmon_calibration_oe_ratio"),
     Stores("cohort_calibration_oe_ratio", "cohort", "Observed over expected positives per "
            "cohort."),
     Stores("calibration_mce", None, "Maximum calibration error.",
            "modelmon_calibration_mce_ratio", decides=False),
     Stores("calibration_brier", None, "Brier score.", "modelmon_calibration_brier_score",
            decides=False)), labels=True)
CHECKS = (CALIBRATION,)


OE_METHOD = "observed / expected positives, Poisson-binomial saddlepoint test"


@dataclass(frozen=True, slots=True)
class ObservedExpectedDecision:
    """O / E of one subject (the window overall, or a cohort ``key=value``) and its
    decision: the effect (|ln O/E| above its line) with the evidence (the
    two-sided p-value below alpha over ``subjects`` tested); ``min_n`` when too small,
    ``sums_unknown`` for a cohort whose summaries predate its sums of scores."""

    stat: ObservedExpected | None
    n: int
    decision: str
    gate: str
    lines: dict[str, float]
    subjects: int = 1
    subject: str = ""

    def to_dict(self) -> dict[str, Any]:
        s = self.stat
        out: dict[str, Any] = {"n": self.n} if s is None else {
            "n": s.n, "observed": s.observed, "expected": s.expected, "ratio": s.ratio,
            "pvalue": s.pvalue, "subjects": self.subjects}
        return {**out, "lines": self.lines, "gate": self.gate, "decision": self.decision}


def oe_decision(sums: tuple[Any, Any, int], n: int, min_n: int, th: Thresholds,
                subjects: int = 1, subject: str = "") -> ObservedExpectedDecision:
    """O / E decided: ``sums`` is (group counts, group mean scores, observed positives)."""
    lines = {"warning": th.oe_log_warning, "critical": th.oe_log_critical}
    if n < max(min_n, 1):
        return ObservedExpectedDecision(None, n, INSUFFICIENT_DATA, "min_n", lines,
                                        subjects, subject)
    s = observed_expected(*sums)
    effect = (math.inf if s.observed else 0.0) if s.ratio is None else (
        abs(math.log(s.ratio)) if s.ratio > 0 else math.inf)
    m = max(subjects, 1)
    decision = (CRITICAL if effect > th.oe_log_critical
                and s.pvalue < th.alpha_critical / m else
                WARNING if effect > th.oe_log_warning
                and s.pvalue < th.alpha_warning / m else OK)
    return ObservedExpectedDecision(s, n, decision, "poisson_binomial", lines, subjects,
                                    subject)


def _digits(x: Any) -> list[float]:
    """Mean scores to 12 significant digits: sums added in another order (a window merged
    from other buckets, an imported summary) differ in their last bits, and the tails'
    saddlepoint must not turn that into a different p-value."""
    return [float(f"{v:.12g}") for v in x]


def slot_groups(sums: CalibrationSums) -> tuple[Any, Any, int]:
    """(counts, mean scores, observed) of the non-empty fine calibration slots: each slot's
    rows taken at their mean score (width at most 0.01; conservative, app/monitoring/
    expected.py)."""
    nz = sums.count > 0
    count = sums.count[nz].astype(float)
    return count, _digits(sums.confidence[nz] / count), int(round(float(sums.outcome.sum())))


@dataclass(frozen=True, slots=True)
class CalibrationReport:
    """The calibration of a window: the statistic (``result``; None for a regression, where
    calibration does not apply), the label coverage, and the decision with its gate: the
    noise quantiles and lines it used, or why it could not decide (``min_support``: about
    how many labeled predictions would do). ``horizon_seconds`` when it was decided over the
    longer horizon."""

    result: CalibrationResult | None
    n: int
    label_coverage: float | None
    decision: str
    thresholds: dict[str, Any] | None = None
    gate: str | None = None
    noise_quantile: dict[str, float] | None = None
    lines: dict[str, float] | None = None
    min_support: int | None = None
    decision_reason: str | None = None
    horizon_seconds: float | None = None
    observed_expected: ObservedExpectedDecision | None = None
    cohorts_observed_expected: tuple[ObservedExpectedDecision, ...] = ()

    def _decided(self) -> dict[str, Any]:
        """The decision and what it rests on, in the order the report states them."""
        if self.gate == "min_n":
            return {"decision": self.decision, "gate": self.gate,
                    "decision_reason": self.decision_reason}
        out: dict[str, Any] = {"noise_quantile": self.noise_quantile}
        if self.gate == "min_support":
            return {**out, "decision": self.decision, "gate": self.gate,
                    "min_support": self.min_support, "decision_reason": self.decision_reason}
        return {**out, "lines": self.lines, "decision": self.decision, "gate": self.gate}

    def to_dict(self) -> dict[str, Any]:
        if self.result is None:
            out = {"status": "not_applicable", "reason": "calibration applies to "
                   "classification", "n": self.n, "label_coverage": self.label_coverage,
                   "decision": self.decision}
        else:
            out = {**self.result.to_dict(), "label_coverage": self.label_coverage,
                   "thresholds": self.thresholds, **self._decided()}
            if self.observed_expected is not None:
                out["observed_expected"] = self.observed_expected.to_dict()
            if self.cohorts_observed_expected:
                out["cohorts_observed_expected"] = [
                    {"cohort": c.subject, **c.to_dict()} for c in self.cohorts_observed_expected]
        if self.horizon_seconds is not None:
            out["horizon_seconds"] = self.horizon_seconds
        return out


def _too_small(r: CalibrationReport, q_warn: float, th: Thresholds) -> CalibrationReport:
    # ECE's noise shrinks about as 1 / sqrt(n): where it would meet the warning line
    # (none, for a warning line so small that no count of predictions reaches it)
    ratio = q_warn / th.ece_warning
    support = r.n * ratio * ratio
    need = math.ceil(support) if math.isfinite(support) else None
    return replace(r, decision=INSUFFICIENT_DATA, gate="min_support", min_support=need,
                   decision_reason=(f"insufficient data: n={r.n}; a calibrated model's ECE "
                                    f"reaches {q_warn:.3f} by chance at this n (quantile "
                                    f"{1 - th.alpha_warning}), above the warning line "
                                    f"{th.ece_warning}; about {need} labeled predictions are "
                                    "needed (evaluate a longer window)"))


def _cohort_groups(window: MergedWindow) -> list[tuple[str, int, tuple[Any, Any, int] | None]]:
    """(``key=value``, labeled n, (counts, mean score, observed) or None where the summaries
    do not know the cohort's sums of scores) per cohort of every key: the cohort's rows at
    its mean score, the binomial (Hoeffding's bound: conservative, app/monitoring/
    expected.py), sorted by subject."""
    out = []
    for key, c in sorted(window.outcome.cohorts.items()):
        for i, name in enumerate(c.cohorts):
            n = int(c.n[i])
            if n == 0:  # a value without labeled pairs in the window (the missing one)
                continue
            sums = None if c.scores is None or c.positives is None else (
                [n], _digits([float(c.scores[i]) / n]), int(round(float(c.positives[i]))))
            out.append((f"{key}={name or ''}", n, sums))
    # by subject: summaries list a key's values in the order their path first met them
    return sorted(out, key=lambda c: c[0])


def _observed_expected(out: CalibrationReport, sums: CalibrationSums, window: MergedWindow,
                       th: Thresholds) -> CalibrationReport:
    """O / E overall and per cohort with at least ``cohort_min_n`` labeled predictions,
    Bonferroni across them all (a cohort whose sums are not known is insufficient_data)."""
    cohorts = _cohort_groups(window)
    tested = [c for c in cohorts if c[2] is not None and c[1] >= max(th.cohort_min_n, 1)]
    m = 1 + len(tested)
    overall = oe_decision(slot_groups(sums), out.n, th.min_n, th, m)
    unknown = {"warning": th.oe_log_warning, "critical": th.oe_log_critical}
    per_cohort = tuple(
        oe_decision(g, n, th.cohort_min_n, th, m, subject) if g is not None else
        ObservedExpectedDecision(None, n, INSUFFICIENT_DATA, "sums_unknown", unknown, m,
                                 subject)
        for subject, n, g in cohorts)
    return replace(out, observed_expected=overall, cohorts_observed_expected=per_cohort)


def calibration(model: ModelRow, window: MergedWindow, th: Thresholds,
                n_bins: int | None = None) -> CalibrationReport:
    bins = n_bins or th.calibration_bins
    o = window.outcome
    coverage = o.labeled / o.n if o.n else None
    if model.task == "regression":
        return CalibrationReport(None, o.labeled, coverage, OK)
    kind = "binary" if model.task == "binary_classification" else "multiclass"
    sums = o.calibration or empty_calibration(len(model.classes or ()))
    r = calibration_from_sums(kind, sums, bins, min_n=th.min_n)
    out = CalibrationReport(r, r.n, coverage, INSUFFICIENT_DATA,
                            th.stated(CALIBRATION.knobs))
    if r.ece is None:
        return replace(out, gate="min_n", decision_reason=r.reason)
    out = _observed_expected(out, sums, window, th)
    q_warn, q_crit = ece_null_quantiles(
        [b.count for b in r.bins], [b.mean_confidence or 0.0 for b in r.bins],
        [1 - th.alpha_warning, 1 - th.alpha_critical]).tolist()
    out = replace(out, noise_quantile={"warning": q_warn, "critical": q_crit})
    if q_warn > th.ece_warning:
        return _too_small(out, q_warn, th)
    warn, warn_gate = line(th.ece_warning, q_warn)
    crit, crit_gate = line(th.ece_critical, q_crit)
    decision, gate = ((CRITICAL, crit_gate) if r.ece > crit else
                      (WARNING, warn_gate) if r.ece > warn else (OK, warn_gate))
    return replace(out, lines={"warning": warn, "critical": crit}, decision=decision,
                   gate=gate)


def findings(r: CalibrationReport) -> list[Finding]:
    """ECE (its decision, with the bins, gate and lines in its detail), MCE and Brier beside
    it; nothing for a regression."""
    c = r.result
    if c is None:
        return []
    method = f"equal-width {c.n_bins} bins, {c.kind}"
    detail = {"bins": [b.to_dict() for b in c.bins], "status": c.status, "reason": c.reason,
              "gate": r.gate, "noise_quantile": r.noise_quantile, "lines": r.lines,
              "min_support": r.min_support, "decision_reason": r.decision_reason,
              "horizon_seconds": r.horizon_seconds, "thresholds": r.thresholds}
    out = [Finding(metric, "", r.n, value, r.decision, method,
                   detail if metric == "calibration_ece" else None)
           for metric, value in (("calibration_ece", c.ece), ("calibration_mce", c.mce),
                                 ("calibration_brier", c.brier))]
    subjects = [("calibration_oe_ratio", r.observed_expected)] if r.observed_expected else []
    subjects += [("cohort_calibration_oe_ratio", c) for c in r.cohorts_observed_expected]
    for metric, oe in subjects:
        assert oe is not None
        out.append(Finding(metric, oe.subject, oe.n,
                           None if oe.stat is None else oe.stat.ratio, oe.decision,
                           f"{OE_METHOD}, {c.kind}",
                           {**oe.to_dict(), "horizon_seconds": r.horizon_seconds,
                            "thresholds": r.thresholds}))
    return out
