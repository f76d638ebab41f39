"""Drift of each feature and of the prediction against the reference: PSI on the reference's
bins with its chi-square evidence, KS D against the reference's sample (Benjamini-Hochberg
across features), decided per column with the data-quality column checks (quality.py) in the
same pass; every gate corrected for the m columns tested (the features and the prediction)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any, TypeVar

import numpy as np

from app.evaluation.checks.declare import Check, Finding, Stores, line
from app.evaluation.checks.quality import CHECK_OF, COLUMN_CHECKS, ColumnWindow, QualityResult
from app.evaluation.policy import CRITICAL, OK, WARNING, Thresholds
from app.evaluation.summaries import ColumnLayout, CompiledProfile, DriftSummary
from app.evaluation.windows import MergedWindow
from app.monitoring import (
    INSUFFICIENT_DATA,
    KsCurves,
    KsResult,
    PsiThresholds,
    correct_ks,
    ks_curves,
    psi,
)
from app.monitoring.drift import KsCounts, ks_from_counts_many
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


@dataclass(frozen=True, slots=True)
class PsiLines:
    """The lines PSI must pass at the window's n, and the rule that set each."""

    warning: float
    warning_gate: str
    critical: float
    critical_gate: str

    def to_dict(self) -> dict[str, Any]:
        return {"warning": self.warning, "warning_gate": self.warning_gate,
                "critical": self.critical, "critical_gate": self.critical_gate}


@dataclass(frozen=True, slots=True)
class PsiGate:
    """A column's PSI gate: the minimum support, the columns tested together, and the lines
    (None for an empty window or reference)."""

    min_support: int | None
    columns_tested: int
    lines: PsiLines | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"min_support": self.min_support,
                               "columns_tested": self.columns_tested}
        if self.lines is not None:
            out["lines"] = self.lines.to_dict()
        return out


@dataclass(frozen=True, slots=True)
class KsLine:
    """A numeric column's KS D line at the window's n, the rule that set it, and whether D
    drifted (after the correction across features)."""

    n_reference_sample: int
    threshold: float
    gate: str
    drift: bool

    def to_dict(self) -> dict[str, Any]:
        return {"n_reference_sample": self.n_reference_sample, "ks_threshold": self.threshold,
                "ks_gate": self.gate, "ks_drift": self.drift}


@dataclass(frozen=True, slots=True)
class ColumnDrift:
    """One column's drift against the reference: PSI with its gate, KS (numeric columns),
    the data-quality checks (``quality``), and the decision with the gate that made it
    (``decision`` None until decided); ``horizon_seconds`` when it was decided over the
    longer horizon."""

    feature: str
    kind: str  # "type" in the report: numeric or categorical
    psi: float | None
    psi_band: str | None
    missing_rate: float | None
    reference_missing_rate: float | None
    n_reference: int
    n_current: int
    bins: tuple[str, ...]
    reference_counts: tuple[int, ...]
    current_counts: tuple[int, ...]
    status: str
    reason: str
    psi_gate: PsiGate
    thresholds: dict[str, Any]
    psi_pvalue: float | None
    quality: tuple[QualityResult, ...] = ()
    ks: KsLine | None = None
    ks_statistic: float | None = None
    ks_pvalue: float | None = None
    ks_pvalue_adjusted: float | None = None
    gate: str | None = None
    decision_reason: str | None = None
    decision: str | None = None
    horizon_seconds: float | None = None

    def _after_decision(self) -> dict[str, Any]:
        return {}

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "feature": self.feature, "type": self.kind, "psi": self.psi,
            "psi_band": self.psi_band, "ks_statistic": self.ks_statistic,
            "ks_pvalue": self.ks_pvalue, "ks_pvalue_adjusted": self.ks_pvalue_adjusted,
            "missing_rate": self.missing_rate,
            "reference_missing_rate": self.reference_missing_rate,
            "n_reference": self.n_reference, "n_current": self.n_current,
            "bins": list(self.bins), "reference_counts": list(self.reference_counts),
            "current_counts": list(self.current_counts), "status": self.status,
            "reason": self.reason, "psi_gate": self.psi_gate.to_dict(),
            "thresholds": self.thresholds, "psi_pvalue": self.psi_pvalue}
        for q in self.quality:
            out.update(q.to_dict())
        if self.ks is not None:
            out.update(self.ks.to_dict())
        out["gate"] = self.gate
        if self.decision_reason is not None:
            out["decision_reason"] = self.decision_reason
        out["decision"] = self.decision
        out.update(self._after_decision())
        if self.horizon_seconds is not None:
            out["horizon_seconds"] = self.horizon_seconds
        return out


@dataclass(frozen=True, slots=True)
class FeatureDrift(ColumnDrift):
    """A feature's drift, with its importance share in the version's weights (None when
    unknown)."""

    importance: float | None = None

    def _after_decision(self) -> dict[str, Any]:
        return {"importance": self.importance}


@dataclass(frozen=True, slots=True)
class PredictionDrift(ColumnDrift):
    """The prediction's drift, decided as a feature's (never corrected across features)."""


@dataclass(frozen=True, slots=True)
class DriftReport:
    """The drift of a window: per feature, and of the prediction (None without one)."""

    n: int
    features: tuple[FeatureDrift, ...]
    prediction: PredictionDrift | None

    def to_dict(self) -> dict[str, Any]:
        return {"n": self.n, "features": [f.to_dict() for f in self.features],
                "prediction": None if self.prediction is None else self.prediction.to_dict()}


def _psi_gate(col: ColumnLayout, total: int, th: Thresholds, m: int) -> PsiGate:
    """Minimum support and the warning and critical lines of one column's PSI at n=total."""
    n_ref = int(sum(col.reference_counts))
    bins = sum(1 for c in col.reference_counts if c > 0)
    support = psi_min_support(th.psi_moderate, n_ref, bins, th.alpha_warning, m)
    if total <= 0 or n_ref <= 0:
        return PsiGate(support, m)
    warn, warn_gate = line(th.psi_warning, psi_noise_quantile(
        total, n_ref, bins, th.alpha_warning, m))
    crit, crit_gate = line(th.psi_critical, psi_noise_quantile(
        total, n_ref, bins, th.alpha_critical, m))
    return PsiGate(support, m, PsiLines(warn, warn_gate, crit, crit_gate))


def _window(col: ColumnLayout, d: DriftSummary) -> ColumnWindow:
    return ColumnWindow(col, d.slice(col.psi_offset, col.psi_slots),
                        d.slice(col.ks_offset, col.ks.n_slots) if col.ks is not None else None)


def _column(cw: ColumnWindow, th: Thresholds, m: int, importance: float | None,
            measured_ks: tuple[KsResult, KsLine] | None) -> tuple[ColumnDrift, KsResult | None]:
    """A column measured and not yet decided, with its KS result (None for a categorical
    column), which drift() corrects across the features before deciding."""
    col = cw.col
    cur_counts = cw.counts
    p = psi(col.reference_counts, cur_counts,
            thresholds=PsiThresholds(th.psi_moderate, th.psi_major), min_n=th.min_n)
    k, ks = measured_ks if measured_ks is not None else (None, None)
    common: dict[str, Any] = dict(
        feature=col.name, kind=col.kind, psi=p.value, psi_band=p.band,
        missing_rate=cw.missing_rate, reference_missing_rate=cw.reference_missing_rate,
        n_reference=col.n_reference_valid, n_current=cw.n_valid,
        bins=tuple(col.binning.labels()), reference_counts=tuple(col.reference_counts),
        current_counts=tuple(cur_counts.tolist()), status=p.status, reason=p.reason,
        psi_gate=_psi_gate(col, cw.total, th, m), thresholds=th.stated(STATED),
        psi_pvalue=(psi_evidence(col.reference_counts, cur_counts)
                    if p.value is not None else None),
        quality=tuple(c.evaluate(cw, th, m) for c in COLUMN_CHECKS if c.applies(col)), ks=ks)
    if col.is_prediction:
        return PredictionDrift(**common), k
    return FeatureDrift(**common, importance=importance), k


def _ks_question(cw: ColumnWindow, th: Thresholds, m: int) -> tuple[KsCounts, str]:
    """KS D against the reference's sample, its line the larger of the D floor and D's noise
    quantile at the window's n (the result is corrected across features later); with the
    rule that set the line."""
    col, n_valid = cw.col, cw.n_valid
    assert col.ks is not None and cw.ks_slots is not None
    n_sample = int(col.ks.sample.shape[0])
    d_line, d_gate = (th.ks_d, "threshold")
    if n_valid > 0 and n_sample > 0:
        d_line, d_gate = line(th.ks_d, ks_noise_quantile(n_valid, n_sample,
                                                         th.alpha_warning, m))
    return KsCounts(col.ks, cw.ks_slots, n_cur_missing=int(cw.counts[-1]),
                    d_threshold=d_line, alpha=th.ks_alpha, min_n=th.min_n), d_gate


def _ks_all(windows: list[ColumnWindow], ths: list[Thresholds], m: int
            ) -> list[tuple[KsResult, KsLine] | None]:
    """Each numeric column's KS (None for a categorical one), computed together: the exact
    p-values a window needs run in parallel."""
    asked = [(i, *_ks_question(cw, th, m))
             for i, (cw, th) in enumerate(zip(windows, ths, strict=True)) if cw.col.ks is not None]
    out: list[tuple[KsResult, KsLine] | None] = [None] * len(windows)
    found = ks_from_counts_many([q for _, q, _ in asked])
    for (i, q, gate), k in zip(asked, found, strict=True):
        out[i] = (k, KsLine(k.n_ref, q.d_threshold, gate, bool(k.drift)))
    return out


def _insufficient(c: ColumnDrift, th: Thresholds) -> tuple[str, str] | None:
    """The gate and reason when the column cannot be decided, else None."""
    if c.status == INSUFFICIENT_DATA or c.psi is None:
        return "min_n", c.reason
    n = sum(c.current_counts)
    if c.missing_rate == 1.0 and (c.reference_missing_rate or 0.0) < 1.0:
        return "all_missing", ("every value is missing in this window: a data-quality "
                               "failure (see the missing rate), not drift")
    support = c.psi_gate.min_support
    if support is None or n < support:
        return "min_support", (
            f"insufficient data: n={n}, below the minimum support "
            f"{'(none with this reference)' if support is None else support} at which a PSI "
            f"of {th.psi_moderate} stands out from sampling noise (alpha {th.alpha_warning} "
            f"across {c.psi_gate.columns_tested} columns); evaluate a longer window")
    return None


def _decide(c: ColumnDrift, th: Thresholds) -> tuple[str, str]:
    """The decision of a measured column and its gate (the rule that applied)."""
    lines, m = c.psi_gate.lines, c.psi_gate.columns_tested
    assert c.psi is not None and c.psi_pvalue is not None and lines is not None
    # evidence: the chi-square test PSI's noise model stands for, Bonferroni across columns
    p = bonferroni_adjust(c.psi_pvalue, m)
    if c.psi > lines.critical and p < th.alpha_critical:
        return CRITICAL, lines.critical_gate
    if c.psi > lines.warning and p < th.alpha_warning:
        return WARNING, lines.warning_gate
    if c.ks is not None and c.ks.drift:
        return WARNING, f"ks_{c.ks.gate}"
    return OK, "psi_evidence" if c.psi > lines.warning else lines.warning_gate


C = TypeVar("C", bound=ColumnDrift)


def _decided(c: C, k: KsResult | None, th: Thresholds, adjusted: bool) -> C:
    """The column with its (corrected) KS figures and its decision."""
    if k is not None and c.ks is not None:
        c = replace(c, ks_statistic=k.statistic, ks_pvalue=k.pvalue,
                    ks_pvalue_adjusted=k.pvalue_adjusted if adjusted else None,
                    ks=replace(c.ks, drift=bool(k.drift)))
    undecided = _insufficient(c, th)
    if undecided is not None:
        gate, reason = undecided
        return replace(c, gate=gate, decision_reason=reason, decision=INSUFFICIENT_DATA)
    decision, gate = _decide(c, th)
    return replace(c, gate=gate, decision=decision)


def drift(window: MergedWindow, cp: CompiledProfile, th: Thresholds,
          features: Mapping[str, Thresholds] | None = None,
          importance: dict[str, float | None] | None = None) -> DriftReport:
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
    prediction = next((col for col in cp.columns if col.is_prediction), None)
    # the features, then the prediction (never under a feature's policy)
    cols = [col for col in cp.columns if not col.is_prediction]
    ths = [of.get(col.name, th) for col in cols]
    if prediction is not None:
        cols.append(prediction)
        ths.append(th)
    windows = [_window(col, d) for col in cols]
    measured = [_column(cw, t, m, None if importance is None or cw.col.is_prediction
                        else importance.get(cw.col.name), k)
                for cw, t, k in zip(windows, ths, _ks_all(windows, ths, m), strict=True)]
    pred = None
    if prediction is not None:
        c, k = measured.pop()
        pred = _decided(c, k, th, False)
    corrected = correct_ks({c.feature: k for c, k in measured if k is not None}, "bh")
    rows = tuple(_decided(c, corrected.get(c.feature, k), of.get(c.feature, th), True)
                 for c, k in measured)
    return DriftReport(window.n, rows, pred)


def column_curves(window: MergedWindow, cp: CompiledProfile, name: str) -> KsCurves | None:
    """The ECDFs behind a numeric column's KS D in ``window`` (None for a categorical or
    unknown column, or without values on either side)."""
    col = next((c for c in cp.columns if c.name == name and not c.is_prediction), None)
    if col is None or col.ks is None:
        return None
    d = window.drift if window.drift is not None else DriftSummary(
        cp.key, 0, np.zeros(cp.size, dtype=np.int64))
    cw = _window(col, d)
    assert cw.ks_slots is not None
    return ks_curves(col.ks, cw.ks_slots)


def _psi_detail(f: ColumnDrift) -> dict[str, Any]:
    """The band, the gate that decided and the lines it used, as the report states them."""
    lines = f.psi_gate.lines
    return {"band": f.psi_band, "gate": f.gate, "decision_reason": f.decision_reason,
            "horizon_seconds": f.horizon_seconds, "min_support": f.psi_gate.min_support,
            "lines": None if lines is None else lines.to_dict(), "thresholds": f.thresholds,
            "reference_counts": list(f.reference_counts),
            "current_counts": list(f.current_counts), "bins": list(f.bins)}


def _ks_detail(f: ColumnDrift) -> dict[str, Any]:
    return {"pvalue": f.ks_pvalue, "threshold": None if f.ks is None else f.ks.threshold,
            "gate": None if f.ks is None else f.ks.gate, "thresholds": f.thresholds}


def findings(report: DriftReport, reference: dict[str, Any]) -> list[Finding]:
    """What the drift job stores: per feature its PSI (with its decision), each column
    check's figure and decision, and for a numeric feature its KS D; the same PSI and KS for
    the prediction."""
    ref = reference.get("source", "none")
    psi_method = f"psi eps=1e-4 ref={ref}, noise gate chi2 x (1/n + 1/n_ref)"
    ks_method = (f"ks_2samp two-sided, BH across features, ref={ref} sample, D line max(floor, "
                 "noise quantile)")
    out: list[Finding] = []
    for f in report.features:
        name, n, decision = f.feature, f.n_current, f.decision or ""
        out.append(Finding("feature_psi", name, n, f.psi, decision, psi_method,
                           {**_psi_detail(f), "importance": f.importance}))
        out += [Finding(CHECK_OF[q.key].metric, name, n, q.value, q.decision,
                        CHECK_OF[q.key].method, {**q.detail(), "thresholds": f.thresholds})
                for q in f.quality]
        if f.kind == "numeric":
            out.append(Finding("feature_ks_statistic", name, n, f.ks_statistic, decision,
                               ks_method,
                               {**_ks_detail(f), "pvalue_adjusted": f.ks_pvalue_adjusted}))
    p = report.prediction
    if p is not None:
        out.append(Finding("prediction_psi", "", p.n_current, p.psi, p.decision or "",
                           psi_method, _psi_detail(p)))
        if p.kind == "numeric":
            out.append(Finding("prediction_ks_statistic", "", p.n_current, p.ks_statistic,
                               p.decision or "", ks_method, _ks_detail(p)))
    return out
