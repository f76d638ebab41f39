"""Embedding drift: per embedding feature, the window's whitened mean shift against the
reference's, on the basis the version's reference profile holds (app/monitoring/
embedding.py). Decided as the other checks are: the effect (the shift's length in the
reference's standard deviations, the noise's part taken off) above its line, the larger of
the policy's threshold and the effect's noise quantile at the window's n, with the evidence
(the chi-square test's p-value at the window's n) below alpha / m, m the embedding features
tested together; and only from the minimum support, the n at which the critical line stands
at or above the noise quantile at alpha_critical / m, so a page rests on the effect, never
on the p-value alone. A smaller window is insufficient_data and decided over the longer
horizon (app/evaluation/horizon.py)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from app.evaluation.checks.declare import Check, Finding, Stores, line
from app.evaluation.policy import CRITICAL, OK, WARNING, Thresholds
from app.evaluation.summaries import CompiledProfile
from app.evaluation.windows import MergedWindow
from app.monitoring import INSUFFICIENT_DATA
from app.monitoring.embedding import EmbeddingBasis, EmbeddingShift, embedding_shift
from app.monitoring.gates import embedding_min_support, embedding_noise_quantile

EMBEDDING_DRIFT = Check(
    "embedding_drift", "drift", "an embedding feature's mean moved beyond its line (in the "
    "reference's standard deviations, whitened; the larger of the threshold and its noise "
    "quantile) with a chi-square p-value below alpha / m (warning, critical), from the "
    "minimum support at which the critical line leaves the noise",
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
    it, with ``reason``), the decision and the gate that made it: the lines at the window's
    n (``lines``: warning and critical, each with the rule that set it) and the minimum
    support, or why it could not decide (``decision_reason``); ``horizon_seconds`` when it
    was decided over the longer horizon."""

    feature: str
    result: EmbeddingShift | None
    decision: str
    gate: str
    dim: int = 0
    explained: float | None = None
    reason: str = ""
    horizon_seconds: float | None = None
    lines: dict[str, Any] | None = None
    min_support: int | None = None
    decision_reason: str | None = None

    def to_dict(self) -> dict[str, Any]:
        if self.result is None:
            return {"feature": self.feature, "status": "not_applicable",
                    "reason": self.reason, "decision": self.decision}
        out = {"feature": self.feature, **self.result.to_dict(), "dim": self.dim,
               "explained_variance": self.explained, "min_support": self.min_support,
               "lines": self.lines, "gate": self.gate, "decision": self.decision}
        if self.decision_reason is not None:
            out["decision_reason"] = self.decision_reason
        if self.horizon_seconds is not None:
            out["horizon_seconds"] = self.horizon_seconds
        return out


@dataclass(frozen=True, slots=True)
class EmbeddingReport:
    """Every embedding feature of the version, with the policy's lines (``lines``: each
    feature states the lines it applied at its n) and the thresholds applied."""

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
        out.append(subject(b, embedding_shift(b, sums, th.min_n), th, m))
    return EmbeddingReport(tuple(sorted(out, key=lambda s: s.feature)),
                           {"warning": th.embedding_shift_warning,
                            "critical": th.embedding_shift_critical},
                           th.stated(EMBEDDING_DRIFT.knobs))


def min_support(b: EmbeddingBasis, th: Thresholds, m: int = 1) -> int | None:
    """The smallest n at which the critical line is at or above the effect's noise quantile
    at alpha_critical / m (None: no window can, the held-out reference is too small)."""
    return embedding_min_support(th.embedding_shift_critical, b.n_reference, b.components,
                                 th.alpha_critical, m)


def lines(n: int, b: EmbeddingBasis, th: Thresholds, m: int = 1) -> dict[str, Any]:
    """The warning and critical lines at n: each the larger of the policy's threshold and
    the effect's noise quantile at its alpha / m, with the rule that set it."""
    k, n_ref = b.components, b.n_reference
    warn, warn_gate = line(th.embedding_shift_warning, embedding_noise_quantile(
        n, n_ref, k, th.alpha_warning, m))
    crit, crit_gate = line(th.embedding_shift_critical, embedding_noise_quantile(
        n, n_ref, k, th.alpha_critical, m))
    return {"warning": warn, "warning_gate": warn_gate, "critical": crit,
            "critical_gate": crit_gate}


def subject(b: EmbeddingBasis, r: EmbeddingShift, th: Thresholds, m: int = 1
            ) -> EmbeddingSubject:
    """One feature's shift decided: insufficient_data below ``min_n`` or the minimum
    support, else critical when the effect passes the critical line with p below
    alpha_critical / m, warning likewise."""
    support = min_support(b, th, m)
    common: dict[str, Any] = {"dim": b.dim, "explained": b.explained, "min_support": support}
    if r.effect is None or r.pvalue is None:
        return EmbeddingSubject(b.feature, r, INSUFFICIENT_DATA, "min_n",
                                decision_reason=r.reason, **common)
    if support is None or r.n < support:
        need = ("none with this reference: upload a larger one" if support is None
                else f"{support}")
        return EmbeddingSubject(b.feature, r, INSUFFICIENT_DATA, "min_support",
                                decision_reason=(
            f"insufficient data: n={r.n}, below the minimum support ({need}) at which a "
            f"shift of {th.embedding_shift_critical} sd stands out from sampling noise "
            f"over {b.components} directions (alpha {th.alpha_critical} across {m} "
            "embedding features); evaluate a longer window"), **common)
    at_n = lines(r.n, b, th, m)
    decision = decide(r, th, m, at_n)
    gate = at_n["critical_gate"] if decision == CRITICAL else at_n["warning_gate"]
    return EmbeddingSubject(b.feature, r, decision, gate, lines=at_n, **common)


def decide(r: EmbeddingShift, th: Thresholds, m: int = 1,
           at_n: dict[str, Any] | None = None) -> str:
    """Critical when the effect passes the critical line (``at_n``; the policy's without
    it) with p below ``alpha_critical`` / m, warning likewise; insufficient_data without a
    statistic."""
    if r.effect is None or r.pvalue is None:
        return INSUFFICIENT_DATA
    warn, crit = ((at_n["warning"], at_n["critical"]) if at_n is not None
                  else (th.embedding_shift_warning, th.embedding_shift_critical))
    return (CRITICAL if r.effect > crit and r.pvalue < th.alpha_critical / m
            else WARNING if r.effect > warn and r.pvalue < th.alpha_warning / m
            else OK)


def findings(r: EmbeddingReport) -> list[Finding]:
    """Per embedding feature with a basis: the effect (the decision, with the statistic in
    its detail) and the p-value."""
    out: list[Finding] = []
    for s in r.features:
        if s.result is None:
            continue
        detail = {**s.to_dict(), "thresholds": r.thresholds}
        out += [Finding("embedding_shift", s.feature, s.result.n, s.result.effect,
                        s.decision, METHOD, detail),
                Finding("embedding_shift_pvalue", s.feature, s.result.n, s.result.pvalue,
                        s.decision, METHOD)]
    return out
