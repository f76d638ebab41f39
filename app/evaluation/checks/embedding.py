"""Embedding drift: per embedding feature, the window's whitened mean shift against the
reference's, on the basis the version's reference profile holds (app/monitoring/
embedding.py). Decided as the other checks are: the effect (the shift's length in the
reference's standard deviations, the noise's part taken off) above its line with the
evidence (the chi-square test's p-value at the window's n) below alpha / m, m the embedding
features tested together."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from app.evaluation.checks.declare import Check, Finding, Stores
from app.evaluation.policy import CRITICAL, OK, WARNING, Thresholds
from app.evaluation.summaries import CompiledProfile
from app.evaluation.windows import MergedWindow
from app.monitoring import INSUFFICIENT_DATA
from app.monitoring.embedding import EmbeddingShift, embedding_shift

EMBEDDING_DRIFT = Check(
    "embedding_drift", "drift", "an embedding feature's mean moved beyond its line (in the "
    "reference's standard deviations, whitened) with a chi-square p-value below alpha / m "
    "(warning, critical)",
    ("alpha_warning", "alpha_critical", "embedding_shift_warning", "embedding_shift_critical",
     "min_n"),
    (Stores("embedding_shift", "feature", "Shift of an embedding feature's mean against the "
            "reference's, whitened: its length in the reference's standard deviations, the "
            "noise's expected part taken off (0 when nothing changed).",
            "modelmon_embedding_shift_effect", subject_state=True),
     Stores("embedding_shift_pvalue", "feature", "P-value of the embedding's mean-shift "
            "chi-square test (the reference mean's noise counted).", decides=False)))
CHECKS = (EMBEDDING_DRIFT,)
# stored with each row (at most 128 characters)
METHOD = ("whitened mean shift on the reference's principal directions, chi-square test with "
          "the reference mean's noise")


@dataclass(frozen=True, slots=True)
class EmbeddingSubject:
    """One embedding feature's shift (``result``; None where the profile has no basis for
    it, with ``reason``), the decision and the gate that made it; ``horizon_seconds`` when
    it was decided over the longer horizon."""

    feature: str
    result: EmbeddingShift | None
    decision: str
    gate: str
    dim: int = 0
    explained: float | None = None
    reason: str = ""
    horizon_seconds: float | None = None

    def to_dict(self) -> dict[str, Any]:
        if self.result is None:
            return {"feature": self.feature, "status": "not_applicable",
                    "reason": self.reason, "decision": self.decision}
        out = {"feature": self.feature, **self.result.to_dict(), "dim": self.dim,
               "explained_variance": self.explained, "gate": self.gate,
               "decision": self.decision}
        if self.horizon_seconds is not None:
            out["horizon_seconds"] = self.horizon_seconds
        return out


@dataclass(frozen=True, slots=True)
class EmbeddingReport:
    """Every embedding feature of the version, with the lines and thresholds applied."""

    features: tuple[EmbeddingSubject, ...] = ()
    lines: dict[str, float] | None = None
    thresholds: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"features": [f.to_dict() for f in self.features], "lines": self.lines,
                "thresholds": self.thresholds}


def embedding(window: MergedWindow, cp: CompiledProfile, th: Thresholds) -> EmbeddingReport:
    """Each embedding feature of the profile decided on its basis, at alpha / m."""
    emb = cp.embeddings
    m = max(len(emb.layouts), 1)
    d = window.drift
    out = [EmbeddingSubject(name, None, OK, "not_applicable", reason=why)
           for name, why in emb.reasons.items()]
    for lay in emb.layouts:
        b = lay.basis
        sums = (d.slice(lay.offset, b.slots) if d is not None and d.n else [0] * b.slots)
        r = embedding_shift(b, sums, th.min_n)
        gate = "min_n" if r.pvalue is None else "chi2_test"
        out.append(EmbeddingSubject(b.feature, r, decide(r, th, m), gate, b.dim, b.explained))
    return EmbeddingReport(tuple(sorted(out, key=lambda s: s.feature)),
                           {"warning": th.embedding_shift_warning,
                            "critical": th.embedding_shift_critical},
                           th.stated(EMBEDDING_DRIFT.knobs))


def decide(r: EmbeddingShift, th: Thresholds, m: int = 1) -> str:
    """Critical when the effect passes ``embedding_shift_critical`` with p below
    ``alpha_critical`` / m, warning likewise; insufficient_data without a statistic."""
    if r.effect is None or r.pvalue is None:
        return INSUFFICIENT_DATA
    return (CRITICAL if r.effect > th.embedding_shift_critical
            and r.pvalue < th.alpha_critical / m
            else WARNING if r.effect > th.embedding_shift_warning
            and r.pvalue < th.alpha_warning / m
            else OK)


def findings(r: EmbeddingReport) -> list[Finding]:
    """Per embedding feature with a basis: the effect (the decision, with the statistic in
    its detail) and the p-value."""
    out: list[Finding] = []
    for s in r.features:
        if s.result is None:
            continue
        detail = {**s.to_dict(), "lines": r.lines, "thresholds": r.thresholds}
        out += [Finding("embedding_shift", s.feature, s.result.n, s.result.effect,
                        s.decision, METHOD, detail),
                Finding("embedding_shift_pvalue", s.feature, s.result.n, s.result.pvalue,
                        s.decision, METHOD)]
    return out
