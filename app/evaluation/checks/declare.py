"""How a check is declared: its name, the job that stores it, the policy knobs its decision
reads and the metrics it stores. The catalogue (app/evaluation/catalogue.py), the result rows,
/metrics and the docs tables all derive from these declarations, so a new check is written
once: its declaration and decision here, its statistic in app/monitoring, its alert rule,
promtool case and runbook section in deploy/ and docs/runbooks.md.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple


class StoredMetric(NamedTuple):
    """A metric the jobs store in `metric_results`, as the catalogue lists it."""

    job: str
    subject: str | None  # "feature", "cohort" ("key=value") or None (model level)
    description: str
    gauge: str | None = None  # the /metrics gauge of its latest value, if exported as such
    check: str | None = None  # the health check its decision feeds on /metrics
    # its decision is also exported per subject (modelmon_feature_check_state or
    # modelmon_cohort_check_state), so a page names its feature or cohort
    subject_state: bool = False


@dataclass(frozen=True)
class Stores:
    """One metric a check stores. ``decides``: the row's decision is the check's (what
    modelmon_check_state exports); otherwise the row is a figure beside it."""

    name: str
    subject: str | None
    description: str
    gauge: str | None = None
    decides: bool = True
    subject_state: bool = False


@dataclass(frozen=True)
class Check:
    """A check, declared once. ``name`` is its `check` label on /metrics; ``job`` the job
    that stores it (None: decided when read, as the version checks are); ``knobs`` the
    policy knobs its decision reads (each MODELMON_THRESHOLD_<KNOB> by default), stated
    with every decision; ``labels``: it is decided on ground truth, so its job evaluates the
    window that ended the model's `label_lag_seconds` ago."""

    name: str
    job: str | None
    summary: str
    knobs: tuple[str, ...]
    stores: tuple[Stores, ...] = ()
    labels: bool = False

    def metrics(self) -> dict[str, StoredMetric]:
        return {s.name: StoredMetric(self.job or "", s.subject, s.description, s.gauge,
                                     self.name if s.decides else None, s.subject_state)
                for s in self.stores}


@dataclass(frozen=True)
class Finding:
    """One value a check stores for a window: a metric of a subject ("" at model level), the
    n it was computed on, the decision and the method, with what a reader needs to see why
    (``detail``). app/evaluation/results.py adds the window and version and stores it."""

    metric: str
    subject: str
    n: int
    value: float | None
    decision: str
    method: str
    detail: dict[str, Any] | None = None


def line(threshold: float, noise: float) -> tuple[float, str]:
    """The line a statistic must pass: the larger of the effect threshold and the noise
    quantile, and the name of the one that applied."""
    return (noise, "noise_quantile") if noise > threshold else (threshold, "threshold")
