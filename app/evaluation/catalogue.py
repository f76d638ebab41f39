"""The one catalogue of stored metric names: what each job stores in `metric_results`, what a
row's `subject` is, and how /metrics exports it. Derived from the check declarations
(app/evaluation/checks); the jobs' result rows, the history report, /metrics and the docs
(held equal by a test) all read it."""

from __future__ import annotations

from app.evaluation.checks import stored_metrics
from app.evaluation.checks.declare import StoredMetric

METRICS: dict[str, StoredMetric] = stored_metrics()

__all__ = ["METRICS", "StoredMetric"]
