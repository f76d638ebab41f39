"""The catalogue of everything /metrics exports: each family's name, type, labels, help and
source, written once. The service metrics and the standard process series of N processes
(observability/metrics.py) and the model-quality families (observability/quality.py) are made
from these entries; docs/prometheus.md's tables are rendered from them
(observability/docs.py, `python scripts/docs-tables.py --write`), and tests hold the docs
and a real scrape equal to them.

Not to be confused with app/evaluation/catalogue.py, the catalogue of *stored* metrics (what
the jobs write to `metric_results`): a stored metric declared with a ``gauge`` becomes a
family here by itself (``source`` RESULT, ``stored`` naming it), so a check that adds one
needs no edit in observability/. The `check` label's values come from the check declarations
(app/evaluation/checks) the same way.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from app.evaluation.catalogue import METRICS
from app.evaluation.checks import CHECKS


class Source(StrEnum):
    """Where a family's values come from, which says whether replicas agree on them."""

    SERVICE = "service"  # counted by each process: sum() across processes and replicas
    RUNTIME = "runtime"  # the client library's process, platform and GC collectors
    RESULT = "result"  # the latest stored result (metric_results): the same on every replica
    DECISION = "decision"  # a decision under the model's policy: stored, or made when read
    REGISTRY = "registry"  # registered models and versions: policy, metadata, weights
    JOBS = "jobs"  # job runs and the configured interval
    TRAFFIC = "traffic"  # stored predictions and labels


@dataclass(frozen=True)
class Family:
    """One exported family. ``name`` as a scrape shows it (a counter's with ``_total``);
    ``doc`` is the docs' meaning where it says more than ``help``; ``values`` and ``notes``
    document a label's values; ``stored`` names the stored metrics it exports; ``decided_by``
    the checks (decided when read) or the policy family whose decision is on its value, where
    no stored metric says so (``decided()``)."""

    name: str
    type: str  # counter | gauge | histogram
    labels: tuple[str, ...]
    help: str
    source: Source
    doc: str = ""
    stored: tuple[str, ...] = ()
    values: dict[str, tuple[str, ...]] = field(default_factory=dict)
    notes: dict[str, str] = field(default_factory=dict)
    buckets: tuple[float, ...] = ()
    decided_by: tuple[str, ...] = ()


LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
HTTP_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
JOB_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0)
MV = ("model", "version")
COHORT = (*MV, "cohort_key", "cohort")
DELTA = (*MV, "base_version")
STATE_DOC = "0 ok or insufficient data, 1 warning, 2 critical"


def _family(source: Source) -> Callable[..., Family]:
    """A maker of the families of one source: (name, type, labels, help, doc="", **fields)."""
    def make(name: str, type_: str, labels: tuple[str, ...], help_: str, doc: str = "",
             **kw: Any) -> Family:
        return Family(name, type_, labels, help_, source, doc, **kw)
    return make


_service, _runtime, _result = (_family(Source.SERVICE), _family(Source.RUNTIME),
                               _family(Source.RESULT))
_decision, _registry, _jobs, _traffic = (_family(Source.DECISION), _family(Source.REGISTRY),
                                         _family(Source.JOBS), _family(Source.TRAFFIC))


SERVICE = (
    _service("modelmon_build_info", "gauge", ("version",), "The running build.",
       "the running build (value 1)"),
    _service("modelmon_ingested_records_total", "counter", ("model", "outcome"), "Records received "
       "by POST /v1/predictions, by outcome.", values={
           "outcome": ("accepted", "duplicate", "rejected")},
       notes={"model": "`__unknown__` for a model not registered"}),
    _service("modelmon_ingested_labels_total", "counter", ("model", "outcome"),
       "Labels received by POST /v1/labels, by outcome.", values={
           "outcome": ("matched", "pending", "duplicate", "rejected")}),
    _service("modelmon_ingest_refused_values_total", "counter", ("model", "feature"), "Feature "
       "values that made a prediction batch be refused (type, range, length), by model and "
       "declared feature.", "feature values that made a prediction batch be refused (wrong "
       "type, out of range, too long, non-finite)",
       notes={"feature": "a declared feature or `__undeclared__`"}),
    _service("modelmon_ingest_unexpected_features_total", "counter", ("model",),
       "Values of features "
       "the model does not declare, stored unmonitored under its unknown_features: record "
       "policy (one per feature per stored prediction), by model.", "values of features "
       "the model does not declare, stored unmonitored under its `unknown_features: record` "
       "policy (one per feature per stored prediction; docs/ingest.md); no feature label, the "
       "names are the client's"),
    _service("modelmon_inference_latency_seconds", "histogram", MV, "The model server's logged "
       "inference latency (latency_ms).", "the model server's logged `latency_ms`, in "
       "seconds (buckets 1 ms .. 10 s)", buckets=LATENCY_BUCKETS),
    _service("modelmon_http_request_duration_seconds", "histogram", ("route", "method", "code"),
       "Request handling time by route template.", buckets=HTTP_BUCKETS,
       notes={"route": "the template, e.g. `/v1/models/{model}`"}),
    _service("modelmon_http_shed_total", "counter", ("reason",), "Connections closed and "
       "requests refused so the service keeps answering, by reason.", "connections closed and "
       "requests refused so the service keeps answering: `idle` (an idle connection closed "
       "past MODELMON_MAX_CONNECTIONS), `overloaded` (503 past MODELMON_MAX_CONNECTIONS "
       "requests in progress), `header_timeout` (408), `header_too_large` (431), "
       "`ingest_wait` (503: a batch found no ingest slot within MODELMON_DB_HANG_SECONDS)",
       values={"reason": ("idle", "overloaded", "header_timeout", "header_too_large",
                          "ingest_wait")}),
    _service("modelmon_job_duration_seconds", "histogram", ("job_name",), "One job run for one "
       "model and window.", "one job run for one model and window (buckets 10 ms .. "
       "10 min)", buckets=JOB_BUCKETS),
    _service("modelmon_job_runs_total", "counter", ("job_name", "outcome"),
       "Job runs for one model "
       "and window, by outcome.", values={"outcome": ("success", "failure")}),
    _service("modelmon_database_errors_total", "counter", ("operation",), "Database failures "
       "answered as 503 or failing a job.", values={"operation": ("request", "job")}),
    _service("modelmon_scheduler_ticks_total", "counter", ("outcome",), "Scheduler ticks (summary "
       "upkeep and every due window), by outcome.", values={
           "outcome": ("success", "failure")}),
    _service("modelmon_rollup_merged_rows_total", "counter", (), "Bucket summary rows this "
       "process's scheduler merged into hourly and daily rows (roll-ups).", "bucket summary "
       "rows this process's scheduler merged into hourly and daily rows (docs/operations.md, "
       "Roll-ups)"),
    _service("modelmon_scheduler_tick_duration_seconds", "histogram", (), "One scheduler tick.",
       "one scheduler tick (buckets 10 ms .. 10 min)", buckets=JOB_BUCKETS),
    _service("modelmon_scheduler_last_tick_timestamp_seconds", "gauge", (), "End of the latest "
       "scheduler tick of this process."),
    _service("modelmon_clock_skew_seconds", "gauge", (), "This machine's clock minus the "
       "database's, at the latest scheduler tick (windows and retention follow the "
       "database's)."),
)

_PROCESS = "under `serve --workers N` summed over the live processes"
RUNTIME = (
    _runtime("process_cpu_seconds_total", "counter", (), "Total user and system CPU time spent in "
       "seconds.", f"CPU seconds; {_PROCESS} (and the exited ones)"),
    _runtime("process_resident_memory_bytes", "gauge", (), "Resident memory size in bytes.",
       f"resident memory; {_PROCESS}"),
    _runtime("process_virtual_memory_bytes", "gauge", (), "Virtual memory size in bytes.",
       f"virtual memory; {_PROCESS}"),
    _runtime("process_open_fds", "gauge", (), "Number of open file descriptors.",
       f"open file descriptors; {_PROCESS}"),
    _runtime("process_max_fds", "gauge", (), "Maximum number of open file descriptors.",
       "the file descriptor limit; under `serve --workers N` the lowest"),
    _runtime("process_start_time_seconds", "gauge", (),
       "Start time of the process since unix epoch "
       "in seconds.", "start time; under `serve --workers N` the oldest live process's"),
    _runtime("python_info", "gauge", ("implementation", "major", "minor", "patchlevel", "version"),
       "Python platform information", "the Python running it (value 1)"),
    *(_runtime(name, "counter", ("generation",), help_, f"{doc} (one process only: "
         "not under `serve --workers N`)")
      for name, help_, doc in (
          ("python_gc_objects_collected_total", "Objects collected during gc",
           "objects the garbage collector collected"),
          ("python_gc_objects_uncollectable_total", "Uncollectable objects found during GC",
           "uncollectable objects the garbage collector found"),
          ("python_gc_collections_total", "Number of times this generation was collected",
           "collections of the generation")))
)


def _checks(feature_only: bool = False) -> tuple[str, ...]:
    """The `check` label's values: the checks whose stored decision /metrics exports (per
    feature: those deciding per feature)."""
    return tuple(c.name for c in CHECKS if c.job is not None and any(
        s.decides and (not feature_only or (s.subject_state and s.subject == "feature"))
        for s in c.stores))


VERSION_CHECKS = tuple(c.name for c in CHECKS if c.job is None)
SUBJECT_LABELS = {"feature": ("feature",), "cohort": ("cohort_key", "cohort"), None: ()}


def stored_result_families() -> Iterator[Family]:
    """A family per stored metric declared with a gauge, its help the declared description."""
    for name, m in METRICS.items():
        if m.gauge:
            yield _result(m.gauge, "gauge", (*MV, *SUBJECT_LABELS[m.subject]), m.description,
                     stored=(name,))


FROM_DETAIL = (  # read from a stored row's detail, or beside its value
    _result("modelmon_feature_ks_pvalue", "gauge", (*MV, "feature"), "KS p-value, "
       "Benjamini-Hochberg adjusted across the version's features.", "KS p-value, "
       "Benjamini-Hochberg adjusted across the version's numeric features (reported; "
       "decisions use D's noise quantile)", stored=("feature_ks_statistic",)),
    _result("modelmon_prediction_ks_pvalue", "gauge", MV, "KS p-value of the prediction.",
       stored=("prediction_ks_statistic",)),
    _result("modelmon_calibration_bin_confidence_ratio", "gauge", (*MV, "bin"), "Mean confidence "
       "in a reliability bin.", stored=("calibration_ece",),
       notes={"bin": "upper edge, e.g. `0.1`"}),
    _result("modelmon_calibration_bin_observed_ratio", "gauge", (*MV, "bin"), "Observed rate in a "
       "reliability bin.", stored=("calibration_ece",)),
    _result("modelmon_cohort_error_ratio", "gauge", COHORT, "Error rate per cohort.",
       "error rate per cohort (classification)", stored=("cohort_error_ratio",)),
    _result("modelmon_cohort_mae", "gauge", COHORT, "MAE per cohort.", "mean absolute error per "
       "cohort (regression), in the target's unit", stored=("cohort_mae",)),
    _result("modelmon_cohort_rmse", "gauge", COHORT, "RMSE per cohort.", "root mean squared "
       "error per cohort (regression), in the target's unit", stored=("cohort_mae",)),
    _result("modelmon_cohort_samples", "gauge", COHORT, "Labeled predictions in the cohort's "
       "window.", stored=("cohort_error_ratio", "cohort_mae")),
    _result("modelmon_cohort_decidable", "gauge", COHORT, "1 when the cohort has the minimum n.",
       "1 when the cohort has at least the minimum n, else 0",
       stored=("cohort_error_ratio", "cohort_mae")),
)

TRAFFIC = (
    _traffic("modelmon_labeled_predictions_total", "counter", ("model",), "Labeled predictions "
       "evaluated so far.", "labeled predictions evaluated so far (for SLO burn rates)"),
    _traffic("modelmon_prediction_errors_total", "counter", ("model",), "Wrong labeled "
       "predictions.", "of those, the wrong ones"),
    _traffic("modelmon_model_last_prediction_timestamp_seconds", "gauge", ("model",), "Newest "
       "stored prediction.", "newest stored prediction time",
       decided_by=("modelmon_model_expected_interval_seconds",)),
)

DECISIONS = (
    _decision("modelmon_check_state", "gauge", (*MV, "check"), "0 ok, 1 warning, 2 critical, under "
       "the model's thresholds.", f"the worst decision of the check in the latest window: "
       f"{STATE_DOC}; the alert rules fire on it", values={"check": _checks()}),
    _decision("modelmon_feature_check_state", "gauge", (*MV, "feature", "check"), "Decision per "
       "feature: 0 ok or insufficient data, 1 warning, 2 critical.", "the decision per "
       "feature (drift; missing values; values outside the reference's range; new "
       "categories), as above", values={"check": _checks(feature_only=True)}),
    _decision("modelmon_cohort_check_state", "gauge", COHORT, "Decision per cohort: 0 ok or "
       "insufficient data, 1 warning, 2 critical.", "the decision per cohort (its error "
       "against the rest of the traffic), as above"),
    _decision("modelmon_version_check_state", "gauge", (*DELTA, "check"),
       "Decision on the version's "
       "weight delta to base_version under the model's policy: 0 ok or insufficient data, "
       "1 warning, 2 critical.", f"decision on the weight delta under the model's policy "
       f"now (`sparsity_jump_*`, `norm_jump_warning`; docs/policy.md), decided at scrape "
       f"time: {STATE_DOC}; ModelmonVersionSparsityJump and ModelmonVersionNormJump fire on "
       f"it", values={"check": VERSION_CHECKS}),
)

POLICY = (
    _registry("modelmon_model_expected_interval_seconds", "gauge", ("model",),
       "Silence after which "
       "the model's missing predictions page (absent: a batch model).", "the model's "
       "policy: silence after which ModelmonNoPredictions pages (default "
       "`MODELMON_EXPECTED_INTERVAL_SECONDS`); absent for a batch model "
       "(`expected_interval_seconds: null`), which never fires it (docs/policy.md)"),
    _registry("modelmon_model_paging", "gauge", ("model",), "1 when the model's critical findings "
       "page, 0 when they only make tickets.", "the model's policy: 1 when its critical "
       "findings page, 0 when they only make tickets (default `MODELMON_PAGE`); the critical "
       "model-quality alerts require 1"),
    _registry("modelmon_model_unused_feature_paging", "gauge", ("model",),
       "1 when critical drift of "
       "a feature the serving version gives zero weight pages, 0 when it only makes a "
       "ticket.", "the model's policy: 1 when critical drift of a feature the serving "
       "version gives zero weight pages, 0 (default `MODELMON_PAGE_UNUSED_FEATURES`) when it "
       "only makes a ticket"),
    _registry("modelmon_model_maintenance", "gauge", ("model",),
       "1 while a maintenance window of the "
       "model is open (its drift, calibration and cohort pages are suppressed).", "1 while "
       "a maintenance window of the model is open (read from the database: the same on every "
       "replica); the drift, calibration and cohort pages are suppressed while it is 1"),
)

JOB_STATE = (
    _jobs("modelmon_job_interval_seconds", "gauge", ("job_name",), "The job's configured "
       "interval."),
    _jobs("modelmon_job_last_success_timestamp_seconds", "gauge", ("job_name", "model"), "Last "
       "successful run of a job for a model."),
    _jobs("modelmon_job_last_run_failed", "gauge", ("job_name", "model"), "1 when the latest run "
       "failed.", "1 when the latest run failed, else 0"),
)

TRAINING_GAUGES = {  # metadata.training field (the family is modelmon_model_version_<field>)
    "train_loss": "Training loss registered with the version.",
    "validation_loss": "Validation loss registered with the version.",
    "penalty_loss": "Regularization term of the training loss.",
    "validation_error": "Validation error (error rate or MAE by task) registered with the version.",
    "validation_ece": "Validation ECE registered with the version.",
    "train_rows": "Rows the version was trained on.",
    "validation_rows": "Rows the version was validated on.",
    "parameters": "Parameters of the version.",
    "nonzero_parameters": "Parameters of the version that are not zero.",
}
LAYER = (*MV, "layer")

VERSIONS = (
    _registry("modelmon_model_version_registered_timestamp_seconds", "gauge", (*MV,
       "regularization"),
       "Registration time of a version.", "registration time; for dashboard annotations and "
       "\"versions in production\"", values={
           "regularization": ("l1", "l2", "elastic_net", "none", "unknown")}),
    _registry("modelmon_model_version_artifact_bytes", "gauge", MV,
       "Artifact size from the version metadata."),
    *(_registry(f"modelmon_model_version_{key}", "gauge", MV, help_, f"{help_[:-1]} "
         f"(`metadata.training.{key}`, only when registered)")
      for key, help_ in TRAINING_GAUGES.items()),
    _registry("modelmon_model_version_validation_gap", "gauge", MV,
       "Validation loss minus training "
       "loss (overfitting shows as a larger gap).", "validation loss minus training loss, "
       "when both are registered (overfitting shows as a larger gap)"),
    _registry("modelmon_model_version_cohort_validation_error", "gauge", COHORT,
       "Validation error of "
       "a cohort registered with the version.", "registered validation error per cohort "
       "(at most `MODELMON_METRICS_MAX_COHORTS` per version)"),
    _registry("modelmon_model_versions", "gauge", ("model",), "Versions registered for a model.",
       "versions registered for the model (cadence: its increase over time; time since the "
       "last version: `time() - max by (model) "
       "(modelmon_model_version_registered_timestamp_seconds)`)"),
    _registry("modelmon_weight_l1", "gauge", LAYER, "L1 norm of the weights.", "L1 norm of the "
       "weights per tensor and overall"),
    _registry("modelmon_weight_l2", "gauge", LAYER, "L2 norm of the weights.", "L2 norm of the "
       "weights per tensor and overall"),
    _registry("modelmon_weight_parameters", "gauge", LAYER, "Parameter count."),
    _registry("modelmon_weight_sparsity_ratio", "gauge", LAYER,
       "Share of weights with |w| <= eps."),
    _registry("modelmon_version_nonzero_features", "gauge", MV, "Input features with a non-zero "
       "weight.", "input features with a non-zero weight in the version"),
    _registry("modelmon_feature_importance_ratio", "gauge", (*MV, "feature"), "The feature's share "
       "of the L1 norm over all input features (0: unused by the version).", "the "
       "feature's share of the L1 norm of the per-feature weights (`feature_tensor`/"
       "`feature_axis` at weight upload), 0 when the version does not use it; at most "
       "`MODELMON_METRICS_MAX_FEATURES` per version: the most important, the rest summed "
       "into `__other__`"),
    _registry("modelmon_version_zeroed_feature_importance_ratio", "gauge", (*DELTA, "feature"),
       "Importance share in base_version of a feature among its top 5 that version zeroed.",
       "a feature among `base_version`'s 5 most important that `version` zeroed, valued at "
       "its importance in `base_version` (at most 5 series per version)"),
    _registry("modelmon_version_sparsity_delta_ratio", "gauge", DELTA, "Overall sparsity minus the "
       "predecessor's.", "overall sparsity of `version` minus that of its predecessor "
       "`base_version` (0.2 = +20 points)", decided_by=("sparsity_jump",)),
    *(_registry(f"modelmon_version_{norm}_relative_change_ratio", "gauge", DELTA,
         f"Relative change "
         f"of the overall {norm.upper()} norm.", "(norm(version) - norm(base)) / "
         f"norm(base), {norm.upper()} norm", decided_by=("norm_jump",))
      for norm in ("l1", "l2")),
)


def _index(*groups: tuple[Family, ...]) -> dict[str, Family]:
    out: dict[str, Family] = {}
    for f in (f for g in groups for f in g):
        if f.name in out:
            raise ValueError(f"{f.name} is catalogued twice")
        out[f.name] = f
    return out


# Everything /metrics exports, by name: per process (SERVICE_FAMILIES), then what is read from
# the database at scrape time, the same on every replica (QUALITY_FAMILIES).
SERVICE_FAMILIES = _index(SERVICE, RUNTIME)
QUALITY_FAMILIES = _index(tuple(stored_result_families()), FROM_DETAIL, TRAFFIC, DECISIONS,
                          POLICY, JOB_STATE, VERSIONS)
FAMILIES = _index(tuple(SERVICE_FAMILIES.values()), tuple(QUALITY_FAMILIES.values()))


def decided() -> dict[str, tuple[str, ...]]:
    """The families whose value is a decision or is decided on, by name, with what decides:
    the decisions themselves (their own name), a stored metric's figures (the check whose
    decision the stored row carries) and the families declared ``decided_by``. A dashboard
    colours these by the decisions (the *_check_state families) and the model's policy, never
    by a line of its own (tests/deploy/test_deploy_dashboards.py)."""
    out: dict[str, tuple[str, ...]] = {}
    for f in FAMILIES.values():
        by = (f.name,) if f.source is Source.DECISION else tuple(dict.fromkeys(
            c for c in (*(METRICS[s].check for s in f.stored), *f.decided_by) if c))
        if by:
            out[f.name] = by
    return out
