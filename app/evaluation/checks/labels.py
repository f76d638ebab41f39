"""Label coverage and delay: how much ground truth the window has, and how late it came."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from app.evaluation.checks.declare import Check, Finding, Stores
from app.evaluation.policy import OK, WARNING, Thresholds
from app.evaluation.windows import MergedWindow
from app.monitoring import INSUFFICIENT_DATA

LABEL_COVERAGE = Check(
    "label_coverage", "labels", "the share of predictions with a label below its line "
    "(warning)", ("min_n", "coverage_warning"),
    (Stores("label_coverage", None, "Share of predictions with a label.",
            "modelmon_label_coverage_ratio"),
     Stores("label_delay_p50_seconds", None, "Median prediction-to-label delay (KLL sketch).",
            "modelmon_label_delay_p50_seconds", decides=False),
     Stores("label_delay_p90_seconds", None, "90th percentile prediction-to-label delay "
            "(KLL sketch).", "modelmon_label_delay_p90_seconds", decides=False)), labels=True)
CHECKS = (LABEL_COVERAGE,)


@dataclass(frozen=True, slots=True)
class LabelsReport:
    """The ground truth of a window: predictions, labeled predictions and their share
    (decided), and the label delay's median and 90th percentile (None without labels)."""

    n: int
    labeled: int
    label_coverage: float | None
    label_delay_p50_seconds: float | None
    label_delay_p90_seconds: float | None
    decision: str
    thresholds: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def label_stats(window: MergedWindow, th: Thresholds) -> LabelsReport:
    """Coverage is exact; delay quantiles come from a KLL sketch (exact up to 200 labels,
    within KLL_RANK_ERROR in rank above)."""
    o = window.outcome
    n, labeled = o.n, o.labeled
    coverage = labeled / n if n else None
    sketch = o.delays

    def q(rank: float) -> float | None:
        return None if sketch is None or sketch.is_empty() else float(
            sketch.get_quantile(rank, True))

    return LabelsReport(
        n, labeled, coverage, q(0.5), q(0.9),
        INSUFFICIENT_DATA if n < th.min_n or coverage is None
        else WARNING if coverage < th.coverage_warning else OK,
        th.stated(LABEL_COVERAGE.knobs))


def findings(r: LabelsReport) -> list[Finding]:
    return [
        Finding("label_coverage", "", r.n, r.label_coverage, r.decision,
                "labeled / predictions in window", {"thresholds": r.thresholds}),
        Finding("label_delay_p50_seconds", "", r.labeled, r.label_delay_p50_seconds,
                "ok", "median label - prediction time"),
        Finding("label_delay_p90_seconds", "", r.labeled, r.label_delay_p90_seconds,
                "ok", "p90 label - prediction time"),
    ]
