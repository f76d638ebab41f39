"""Multivariate drift: the window's mean PCA reconstruction error against the reference's
own, on the basis the version's reference profile holds (app/monitoring/multivariate.py).
It sees a change in how the numeric features move together that leaves each one's PSI and
KS quiet. Decided as the other checks are: the effect (the change in mean error, in the
reference's standard deviations, either way) above its line with the evidence (the z test's
p-value at the window's n) below alpha."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from app.evaluation.checks.declare import Check, Finding, Stores
from app.evaluation.policy import CRITICAL, OK, WARNING, Thresholds
from app.evaluation.summaries import CompiledProfile
from app.evaluation.windows import MergedWindow
from app.monitoring import INSUFFICIENT_DATA
from app.monitoring.multivariate import SUM_SLOTS, PcaErrorDrift, pca_error_drift

MULTIVARIATE_DRIFT = Check(
    "multivariate_drift", "drift", "the mean PCA reconstruction error of the numeric "
    "features moved beyond its line (in the reference's standard deviations) with a z-test "
    "p-value below alpha (warning, critical)",
    ("alpha_warning", "alpha_critical", "pca_error_warning", "pca_error_critical", "min_n"),
    (Stores("multivariate_pca_error", None, "Change in the mean PCA reconstruction error of "
            "the numeric features against the reference's, in the reference's standard "
            "deviations (0 when nothing changed).", "modelmon_multivariate_pca_error_effect"),
     Stores("multivariate_pca_error_mean", None, "Mean PCA reconstruction error of the "
            "window (standardised units).", decides=False)))
CHECKS = (MULTIVARIATE_DRIFT,)
METHOD = ("pca reconstruction error, components to 65% explained variance, two-sided z test "
          "with the reference's variance at the window's n")


@dataclass(frozen=True, slots=True)
class MultivariateReport:
    """The window's PCA error drift (``result``; None where the profile has no basis, with
    ``reason``), the decision and the gate that made it, the lines applied;
    ``horizon_seconds`` when it was decided over the longer horizon."""

    result: PcaErrorDrift | None
    decision: str
    gate: str
    features: tuple[str, ...] = ()
    components: int = 0
    explained: float | None = None
    lines: dict[str, float] | None = None
    thresholds: dict[str, Any] | None = None
    reason: str = ""
    horizon_seconds: float | None = None

    def to_dict(self) -> dict[str, Any]:
        if self.result is None:
            return {"status": "not_applicable", "reason": self.reason,
                    "decision": self.decision}
        out = {**self.result.to_dict(), "features": list(self.features),
               "components": self.components, "explained_variance": self.explained,
               "lines": self.lines, "thresholds": self.thresholds, "gate": self.gate,
               "decision": self.decision}
        if self.horizon_seconds is not None:
            out["horizon_seconds"] = self.horizon_seconds
        return out


def multivariate(window: MergedWindow, cp: CompiledProfile, th: Thresholds
                 ) -> MultivariateReport:
    """The window decided on the profile's basis: critical when |effect| passes
    ``pca_error_critical`` with p below ``alpha_critical``, warning likewise."""
    basis = cp.pca
    if basis is None:
        return MultivariateReport(None, OK, "not_applicable", reason=cp.pca_reason)
    d = window.drift
    sums = (d.slice(cp.pca_offset, SUM_SLOTS) if d is not None and d.n
            else [0, 0, 0])
    r = pca_error_drift(basis, sums, th.min_n)
    lines = {"warning": th.pca_error_warning, "critical": th.pca_error_critical}
    common = {"features": basis.features, "components": int(basis.components.shape[1]),
              "explained": basis.explained, "lines": lines,
              "thresholds": th.stated(MULTIVARIATE_DRIFT.knobs)}
    if r.effect is None or r.pvalue is None:
        return MultivariateReport(r, INSUFFICIENT_DATA, "min_n", reason=r.reason, **common)
    return MultivariateReport(r, decide(r, th), "z_test", **common)


def decide(r: PcaErrorDrift, th: Thresholds) -> str:
    """The decision on a statistic: critical when |effect| passes ``pca_error_critical``
    with p below ``alpha_critical``, warning likewise; insufficient_data without one."""
    if r.effect is None or r.pvalue is None:
        return INSUFFICIENT_DATA
    effect = abs(r.effect)
    return (CRITICAL if effect > th.pca_error_critical and r.pvalue < th.alpha_critical
            else WARNING if effect > th.pca_error_warning and r.pvalue < th.alpha_warning
            else OK)


def findings(r: MultivariateReport) -> list[Finding]:
    """The effect (the decision, with the statistic in its detail) and the mean error;
    nothing where the profile has no basis."""
    s = r.result
    if s is None:
        return []
    detail = r.to_dict()
    return [Finding("multivariate_pca_error", "", s.n, s.effect, r.decision, METHOD, detail),
            Finding("multivariate_pca_error_mean", "", s.n, s.mean, r.decision, METHOD)]
