"""Label coverage and delay: how much ground truth the window has, and how late it came."""

from __future__ import annotations

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


def label_stats(window: MergedWindow, th: Thresholds) -> dict[str, Any]:
    """Coverage is exact; delay quantiles come from a KLL sketch (exact up to 200 labels,
    within KLL_RANK_ERROR in rank above)."""
    o = window.outcome
    n, labeled = o.n, o.labeled
    coverage = labeled / n if n else None
    sketch = o.delays

    def q(rank: float) -> float | None:
        return None if sketch is None or sketch.is_empty() else float(
            sketch.get_quantile(rank, True))

    return {
        "n": n, "labeled": labeled, "label_coverage": coverage,
        "label_delay_p50_seconds": q(0.5), "label_delay_p90_seconds": q(0.9),
        "decision": (INSUFFICIENT_DATA if n < th.min_n or coverage is None
                     else WARNING if coverage < th.coverage_warning else OK),
        "thresholds": th.stated(LABEL_COVERAGE.knobs),
    }


def findings(r: dict[str, Any]) -> list[Finding]:
    return [
        Finding("label_coverage", "", r["n"], r["label_coverage"], r["decision"],
                "labeled / predictions in window", {"thresholds": r.get("thresholds")}),
        Finding("label_delay_p50_seconds", "", r["labeled"], r["label_delay_p50_seconds"],
                "ok", "median label - prediction time"),
        Finding("label_delay_p90_seconds", "", r["labeled"], r["label_delay_p90_seconds"],
                "ok", "p90 label - prediction time"),
    ]
