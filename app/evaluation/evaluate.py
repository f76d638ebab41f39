"""One job's window for one model, evaluated: what each version needs is loaded in one
storage visit (``Loader``), the checks decide on it with pure functions (``PARTS``), the
shortest horizon that decides each subject is chosen by one rule (horizon.py), each check
turns its report into typed findings, and results.py stores those as rows. The jobs
(app/jobs/runner.py) only run this."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection

from app.evaluation import figures, horizon, windows
from app.evaluation import results as result_rows
from app.evaluation.checks import (
    LABEL_JOBS,
    calibration,
    cohorts,
    drift,
    embedding,
    gap,
    labels,
    multivariate,
    performance,
)
from app.evaluation.checks.declare import Finding
from app.evaluation.policy import EffectivePolicy, effective
from app.evaluation.profiles import ProfileCache
from app.evaluation.references import Reference, reference_for
from app.settings import Settings
from app.storage import registry
from app.storage import summaries as store
from app.storage.registry import ModelRow

Row = dict[str, Any]


@dataclass(frozen=True)
class Inputs:
    """Everything one version's window is decided on."""

    model: ModelRow
    policy: EffectivePolicy
    window: windows.MergedWindow
    reference: Reference | None = None  # drift: the profile compared with, and its source
    importance: dict[str, float | None] | None = None  # drift: each feature's weight share
    training: dict[str, Any] = field(default_factory=dict)  # cohorts: registered figures


@dataclass
class Loader:
    """The storage side of one (job, model, window): loads a version's inputs over the job
    window or the longer horizon, each at most once."""

    conn: Connection
    job: str
    model: ModelRow
    settings: Settings
    now: datetime
    profiles: ProfileCache
    policy: EffectivePolicy
    _training: dict[int, dict[str, Any]] | None = None
    _references: dict[int, tuple[Reference, dict[str, float | None]]] = field(
        default_factory=dict)
    _cache: dict[tuple[int, datetime, datetime], Inputs | None] = field(default_factory=dict)

    def inputs(self, version_id: int, start: datetime, end: datetime) -> Inputs | None:
        """None for a drift window of a version with no reference yet (nothing to compare)."""
        key = (version_id, start, end)
        if key not in self._cache:
            self._cache[key] = self._load(version_id, start, end)
        return self._cache[key]

    def _merge(self, version_id: int, start: datetime, end: datetime,
               cp: Any = None) -> windows.MergedWindow:
        return windows.merge(self.conn, self.model, version_id, start, end,
                             bucket_seconds=self.settings.job_interval_seconds, cp=cp,
                             max_cohort_values=self.settings.summary_max_cohort_values)

    def _load(self, version_id: int, start: datetime, end: datetime) -> Inputs | None:
        conn, model = self.conn, self.model
        if self.job == "drift":
            if version_id not in self._references:
                ref = reference_for(conn=conn, model=model, version_id=version_id,
                                    settings=self.settings, now=self.now,
                                    profiles=self.profiles, store_baseline=True)
                used = ({} if ref.profile is None else
                        registry.feature_importance(conn=conn, version_id=version_id))
                self._references[version_id] = (ref, used)
            ref, used = self._references[version_id]
            if ref.profile is None:
                return None
            return Inputs(model, self.policy, self._merge(version_id, start, end, ref.profile),
                          reference=ref, importance=used)
        training: dict[str, Any] = {}
        if self.job == "cohorts":
            if self._training is None:
                self._training = registry.training_blocks(conn=conn, model_id=model.id)
            training = self._training.get(version_id, {})
        return Inputs(model, self.policy, self._merge(version_id, start, end),
                      training=training)


@dataclass(frozen=True)
class Part:
    """One report a job makes per version: decided purely from the inputs (a check's typed,
    frozen result, or None where it does not apply), turned into the check's findings, and
    (``horizon``) moved subject by subject to the longer horizon when the job window is too
    small to decide it."""

    decide: Callable[[Inputs], Any]
    findings: Callable[[Inputs, Any], list[Finding]]
    horizon: horizon.Horizon | None = None


def _drift(x: Inputs) -> drift.DriftReport:
    assert x.reference is not None and x.reference.profile is not None
    th = x.policy.thresholds
    return drift.drift(x.window, x.reference.profile, th, x.policy.features, x.importance)


def _drift_findings(x: Inputs, report: drift.DriftReport) -> list[Finding]:
    assert x.reference is not None
    return drift.findings(report, x.reference.info)


def _performance(x: Inputs) -> performance.PerformanceReport:
    assert x.reference is not None and x.reference.profile is not None
    return performance.performance(x.model, x.window, x.reference.profile,
                                   x.policy.thresholds)


def _multivariate(x: Inputs) -> multivariate.MultivariateReport:
    assert x.reference is not None and x.reference.profile is not None
    return multivariate.multivariate(x.window, x.reference.profile, x.policy.thresholds)


def _embedding(x: Inputs) -> embedding.EmbeddingReport:
    assert x.reference is not None and x.reference.profile is not None
    return embedding.embedding(x.window, x.reference.profile, x.policy.thresholds)


def _cohorts(x: Inputs) -> cohorts.CohortsReport:
    if not x.model.cohort_keys:
        return cohorts.CohortsReport()
    return cohorts.cohorts(x.model, x.window, x.policy.thresholds, x.policy.cohort_keys)


PARTS: dict[str, tuple[Part, ...]] = {
    "drift": (Part(_drift, _drift_findings, horizon.DRIFT),
              Part(_multivariate, lambda _x, r: [] if r is None else multivariate.findings(r),
                   horizon.MULTIVARIATE),
              Part(_embedding, lambda _x, r: embedding.findings(r), horizon.EMBEDDING),
              Part(_performance, lambda _x, r: performance.findings(r))),
    "calibration": (Part(lambda x: calibration.calibration(x.model, x.window,
                                                           x.policy.thresholds),
                         lambda _x, r: [] if r is None else calibration.findings(r),
                         horizon.CALIBRATION),),
    # the overall error (and a classifier's realized metrics) and gap of every model with
    # labels; cohorts where it has keys
    "cohorts": (Part(lambda x: cohorts.overall_error(x.model, x.window),
                     lambda _x, r: cohorts.overall_findings(r)),
                Part(lambda x: None if x.model.task == "regression"
                     else performance.realized(x.window),
                     lambda _x, r: performance.realized_findings(r)),
                Part(_cohorts, lambda _x, r: cohorts.findings(r), horizon.COHORTS),
                Part(lambda x: gap.generalization_gap(x.model, x.window, x.policy.thresholds,
                                                      x.training),
                     lambda _x, r: gap.findings(r), horizon.GAP)),
    "labels": (Part(lambda x: labels.label_stats(x.window, x.policy.thresholds),
                    lambda _x, r: labels.findings(r)),),
}


def version_rows(loader: Loader, version_id: int, start: datetime, end: datetime,
                 long_start: datetime | None) -> tuple[list[Row], Inputs | None]:
    """The rows of one version's window (``long_start``: where the longer horizon starts,
    None when it is no longer than the window), and the job window's inputs."""
    x = loader.inputs(version_id, start, end)
    if x is None:
        return [], None
    rows: list[Row] = []
    for part in PARTS[loader.job]:
        report = part.decide(x)
        if long_start is not None and part.horizon is not None and report is not None \
                and part.horizon.too_small(report):
            xl = loader.inputs(version_id, long_start, end)
            assert xl is not None
            report, long = part.horizon.split(report, part.decide(xl),
                                              (end - long_start).total_seconds())
            rows += result_rows.rows(loader.job, xl.model, xl.window, part.findings(xl, long))
        rows += result_rows.rows(loader.job, x.model, x.window, part.findings(x, report))
    return rows, x


def window_rows(job: str, conn: Connection, model: ModelRow, start: datetime, end: datetime,
                settings: Settings, now: datetime, profiles: ProfileCache,
                counts: dict[str, int] | None = None) -> list[Row]:
    """The result rows of one job window, over every version with traffic in it; ``counts``,
    when given, gets the predictions and labeled predictions the window held."""
    if job not in PARTS:
        raise ValueError(f"unknown job {job!r}")
    counts = {} if counts is None else counts
    pol = effective(settings, model.policy)
    if job in LABEL_JOBS and pol.label_lag_seconds:
        lag = timedelta(seconds=pol.label_lag_seconds)
        start, end = start - lag, end - lag
    long = settings.job_long_window_seconds
    long_start = end - timedelta(seconds=long) if long > (end - start).total_seconds() \
        else None
    loader = Loader(conn, job, model, settings, now, profiles, pol)
    rows: list[Row] = []
    # the costly figures computed here are stored with the results, for the pages and
    # reports of the same window (the service runs in another process)
    with figures.shared(conn) as computed:
        for version_id in store.versions_in_window(conn=conn, model_id=model.id,
                                                   start=start, end=end):
            got, x = version_rows(loader, version_id, start, end, long_start)
            rows += got
            if x is not None:
                counts["predictions"] = counts.get("predictions", 0) + x.window.n
                counts["labeled"] = counts.get("labeled", 0) + x.window.outcome.labeled
        computed.write_within(conn)
    return rows
