"""Performance estimated before the labels: a classifier's accuracy, precision, recall and F1
(and ROC AUC beside them) from its scores alone, calibrated on the version's labeled
reference (CBPE, app/monitoring/cbpe.py), decided against the reference's realized values.

The effect is the drop of an estimate below the reference's realized value; the evidence its
one-sided p-value under the estimate's Poisson-binomial variance, corrected (Bonferroni)
across the metrics tested. A ticket by default: the critical line is 1, which no drop of a
metric in [0, 1] passes, so only a policy that lowers it pages. The window's realized
accuracy, precision, recall and F1 (its labeled pairs' confusion counts, the predicted class
by the estimate's own rule, averaged as the estimate is) are stated beside the estimates with
the labeled n once labels have come; they decide nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from scipy import stats

from app.evaluation.checks.declare import Check, Finding, Stores
from app.evaluation.policy import CRITICAL, OK, WARNING, Thresholds
from app.evaluation.summaries import CompiledProfile
from app.evaluation.windows import MergedWindow
from app.monitoring import INSUFFICIENT_DATA
from app.monitoring.cbpe import AUC_SLOTS, CbpeEstimate, Interval, estimate, realized_metrics
from app.storage.registry import ModelRow

METRICS = ("accuracy", "precision", "recall", "f1")
PERFORMANCE = Check(
    "performance_estimate", "drift", "an estimated (CBPE) accuracy, precision, recall or F1 "
    "below the reference's realized value by more than its line, with a one-sided "
    "Poisson-binomial p-value below alpha over the metrics tested (warning; critical only "
    "where the policy lowers its line)", ("alpha_warning", "alpha_critical",
                                          "cbpe_drop_warning", "cbpe_drop_critical",
                                          "min_n"),
    (*(Stores(f"estimated_{m}", None, f"{label} estimated from the scores alone (CBPE), "
              "before labels.", f"modelmon_estimated_{m}_ratio")
       for m, label in (("accuracy", "Accuracy"), ("precision", "Precision (macro, "
                        "multiclass)"), ("recall", "Recall (macro, multiclass)"),
                        ("f1", "F1 (macro, multiclass)"))),
     Stores("estimated_roc_auc", None, "ROC AUC estimated from the scores alone (CBPE), "
            "within its stated histogram bound.", "modelmon_estimated_roc_auc_ratio",
            decides=False)))
CHECKS = (PERFORMANCE,)
METHOD = "CBPE: expected confusion matrix of calibrated scores, Poisson-binomial variance"
REALIZED_METHOD = "confusion counts of the labeled predictions"


@dataclass(frozen=True, slots=True)
class MetricDecision:
    """One estimated metric against the reference's realized value."""

    metric: str
    estimate: Interval | None
    reference: float | None
    drop: float | None
    pvalue: float | None
    subjects: int
    decision: str
    realized: float | None = None  # the window's own, from its labels (decides nothing)

    def to_dict(self) -> dict[str, Any]:
        e = self.estimate
        return {"metric": self.metric, "estimate": None if e is None else e.value,
                "std": None if e is None else e.std,
                "lower": None if e is None else e.lower, "upper": None if e is None else e.upper,
                "realized": self.realized, "reference": self.reference, "drop": self.drop,
                "pvalue": self.pvalue, "subjects": self.subjects, "decision": self.decision}


@dataclass(frozen=True, slots=True)
class Realized:
    """The window's realized metrics over its ``labeled`` pairs (None where undefined, or
    not available: ``reason`` says why)."""

    labeled: int = 0
    accuracy: float | None = None
    precision: float | None = None
    recall: float | None = None
    f1: float | None = None
    reason: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"labeled": self.labeled, "accuracy": self.accuracy,
                "precision": self.precision, "recall": self.recall, "f1": self.f1,
                "reason": self.reason}


@dataclass(frozen=True, slots=True)
class PerformanceReport:
    """The window's CBPE estimate and its decisions; ``status`` not_applicable (a regression,
    or a reference without labels: nothing to calibrate on) or sums_unknown (summaries
    written before the sums were kept)."""

    status: str
    n: int
    decision: str
    metrics: tuple[MetricDecision, ...] = ()
    roc_auc: float | None = None
    roc_auc_bound: float | None = None
    confusion: tuple[tuple[float, ...], ...] = ()
    realized: Realized = Realized()
    thresholds: dict[str, Any] | None = None
    reason: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"status": self.status, "n": self.n, "decision": self.decision,
                "reason": self.reason, "metrics": [m.to_dict() for m in self.metrics],
                "roc_auc": self.roc_auc, "roc_auc_bound": self.roc_auc_bound,
                "expected_confusion_matrix": [list(r) for r in self.confusion],
                "realized": self.realized.to_dict(), "thresholds": self.thresholds,
                "method": METHOD}


def _decide(metric: str, e: Interval | None, ref: float | None, m: int,
            th: Thresholds, realized: float | None) -> MetricDecision:
    if e is None or ref is None:
        return MetricDecision(metric, e, ref, None, None, m, INSUFFICIENT_DATA, realized)
    drop = ref - e.value
    p = (0.0 if drop > 0 else 1.0) if e.std == 0 else float(stats.norm.sf(drop / e.std))
    decision = (CRITICAL if drop > th.cbpe_drop_critical and p < th.alpha_critical / m else
                WARNING if drop > th.cbpe_drop_warning and p < th.alpha_warning / m else OK)
    return MetricDecision(metric, e, ref, drop, p, m, decision, realized)


def _worst(decisions: list[str]) -> str:
    for d in (CRITICAL, WARNING, OK):
        if d in decisions:
            return d
    return INSUFFICIENT_DATA


def realized(window: MergedWindow) -> Realized:
    """The window's realized metrics from its outcome's confusion counts; where a summary
    predates them, only the accuracy (from the overall error count, by the same rule) and the
    others not available."""
    o = window.outcome
    if not o.labeled:
        return Realized(0, reason="no label has arrived for the window's predictions")
    if o.confusion is not None and o.confusion.size:
        return Realized(o.labeled, **realized_metrics(o.confusion))
    accuracy = None if o.errors is None else 1.0 - o.errors / o.labeled
    return Realized(o.labeled, accuracy, reason="not available: the window's outcome "
                    "summaries predate the confusion counts (kept from this release on)")


def performance(model: ModelRow, window: MergedWindow, profile: CompiledProfile,
                th: Thresholds) -> PerformanceReport:
    """The window's estimate (from its drift summary's CBPE sums) decided against the
    reference's realized metrics."""
    stated = th.stated(PERFORMANCE.knobs)
    if model.task == "regression" or profile.cbpe is None:
        return PerformanceReport("not_applicable", window.n, OK, thresholds=stated,
                                 reason="CBPE needs a classifier whose reference has labels")
    sums = None if window.drift is None else window.drift.cbpe
    if sums is None:
        return PerformanceReport("sums_unknown", window.n, INSUFFICIENT_DATA,
                                 realized=realized(window), thresholds=stated,
                                 reason="the window's summaries predate the CBPE sums (they "
                                 "are kept from this release on)")
    e: CbpeEstimate = estimate(sums)
    truth = realized(window)
    common = {"roc_auc": e.roc_auc, "roc_auc_bound": e.roc_auc_bound,
              "confusion": e.confusion, "realized": truth, "thresholds": stated}
    if e.n < max(th.min_n, 1):
        return PerformanceReport("ok", e.n, INSUFFICIENT_DATA, reason=f"insufficient data: "
                                 f"n={e.n} < min_n={th.min_n}", **common)
    ref = profile.cbpe_realized or {}
    pairs = [(name, getattr(e, name), ref.get(name)) for name in METRICS]
    m = max(sum(1 for _, est, r in pairs if est is not None and r is not None), 1)
    decided = tuple(_decide(name, est, r, m, th, getattr(truth, name))
                    for name, est, r in pairs)
    return PerformanceReport("ok", e.n, _worst([d.decision for d in decided]), decided,
                             **common)


def realized_findings(r: Realized | None) -> list[Finding]:
    """The realized metrics of a classifier's labeled window (stored by the labeled cohorts
    job beside the overall error, declared in gap.py); nothing without labels."""
    if r is None or not r.labeled:
        return []
    return [Finding(f"realized_{m}", "", r.labeled, getattr(r, m), OK, REALIZED_METHOD,
                    {"reason": r.reason} if r.reason else None) for m in METRICS]


def findings(r: PerformanceReport) -> list[Finding]:
    """Each estimated metric with its decision, ROC AUC beside them; nothing where CBPE does
    not apply."""
    if r.status == "not_applicable":
        return []
    detail = {"roc_auc_bound": r.roc_auc_bound, "thresholds": r.thresholds,
              "realized": r.realized.to_dict(), "reason": r.reason}
    if not r.metrics:  # too small, or sums unknown: every metric undecided
        return [Finding(f"estimated_{m}", "", r.n, None, r.decision, METHOD, detail)
                for m in METRICS]
    out = [Finding(f"estimated_{d.metric}", "", r.n,
                   None if d.estimate is None else d.estimate.value, d.decision, METHOD,
                   {**d.to_dict(), **detail,
                    **({"expected_confusion_matrix": [list(x) for x in r.confusion]}
                       if d.metric == "accuracy" else {})})
           for d in r.metrics]
    if r.roc_auc is not None:
        out.append(Finding("estimated_roc_auc", "", r.n, r.roc_auc, OK,
                           f"{METHOD}; ROC AUC from a {AUC_SLOTS}-slot score histogram", detail))
    return out
