"""Every check modelmon decides, declared once (declare.py): the drift job's per-column
checks (drift.py, quality.py), multivariate drift (multivariate.py), embedding drift
(embedding.py) and performance
estimate (performance.py), calibration, cohort error, the generalization gap, label
coverage, and the version checks decided when read. The catalogue of stored metrics,
/metrics' `check` labels and the docs tables derive from
``CHECKS``.
"""

from __future__ import annotations

from app.evaluation.checks import (
    calibration,
    cohorts,
    drift,
    embedding,
    gap,
    labels,
    multivariate,
    performance,
    versions,
)
from app.evaluation.checks.declare import Check, StoredMetric

CHECKS: tuple[Check, ...] = (*drift.CHECKS, *multivariate.CHECKS, *embedding.CHECKS,
                             *performance.CHECKS,
                             *calibration.CHECKS, *gap.CHECKS, *cohorts.CHECKS,
                             *labels.CHECKS, *versions.CHECKS)
BY_NAME: dict[str, Check] = {c.name: c for c in CHECKS}
# The checks of a job, in the order it evaluates them.
BY_JOB: dict[str, tuple[Check, ...]] = {}
for _c in CHECKS:
    if _c.job is not None:
        BY_JOB[_c.job] = (*BY_JOB.get(_c.job, ()), _c)
# The window jobs, in the order a tick runs them: the jobs the checks are stored by.
JOBS: tuple[str, ...] = tuple(BY_JOB)
# The jobs decided on ground truth: they evaluate the window that ended the model's
# `label_lag_seconds` ago, so that delayed labels have arrived.
LABEL_JOBS: frozenset[str] = frozenset(c.job for c in CHECKS if c.labels and c.job)


def stored_metrics() -> dict[str, StoredMetric]:
    """Every stored metric, by name, from the checks that store them (each name once)."""
    out: dict[str, StoredMetric] = {}
    for c in CHECKS:
        for name, metric in c.metrics().items():
            if name in out:
                raise ValueError(f"{name} is declared by two checks")
            out[name] = metric
    return out
