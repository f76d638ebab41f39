"""One settings object for the whole service, read from ``MODELMON_*`` environment variables."""

from __future__ import annotations

from functools import lru_cache
from typing import Literal

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

MIB = 1024 * 1024


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="MODELMON_", extra="ignore")

    # The embedded default: a SQLite file in the working directory, so that `modelmon serve`
    # works on a laptop with nothing to set up. Production: postgresql+psycopg://...
    database_url: str = "sqlite:///./modelmon.db"
    # Connecting to an unreachable database must fail fast (503), never hang a request.
    db_connect_timeout_seconds: float = Field(default=3.0, gt=0)
    # Upper bound for any one statement on Postgres, so a stuck lock cannot hang a request.
    db_statement_timeout_seconds: float = Field(default=30.0, gt=0)
    # A statement that waits this long for Postgres makes the service check, on a new
    # connection, whether the database still answers; if it does not (frozen: a stopped
    # process, a proxy that stops forwarding), waiting requests get a 503 at once
    # (app/storage/hang.py). Slow statements on a live database are left alone.
    db_hang_seconds: float = Field(default=3.0, gt=0)
    db_pool_size: int = Field(default=10, ge=1)
    retry_after_seconds: int = Field(default=5, ge=1)

    max_body_bytes: int = Field(default=10 * MIB, ge=1024)
    # A request body that stops arriving for this long is answered 408 and its connection
    # closed, so slow or stalled clients cannot hold connections and worker slots.
    body_read_timeout_seconds: float = Field(default=15.0, gt=0)
    # Connections served at once by one process (uvicorn's limit_concurrency); past it, 503.
    max_connections: int = Field(default=1000, ge=10)
    # Uploads (references, weights) written to temporary files at once by one process; past
    # it, 429 with Retry-After. A file is taken only once an upload's body starts arriving.
    max_concurrent_uploads: int = Field(default=4, ge=1)
    max_batch_records: int = Field(default=10_000, ge=1)
    # Timestamps further in the future than this are refused (clock skew allowance).
    max_future_seconds: float = Field(default=86_400.0, ge=0)
    # Timestamps older than this are refused: every accepted day costs a partition.
    max_past_days: int = Field(default=400, ge=1)
    multiclass_sum_tolerance: float = Field(default=1e-3, gt=0)
    # Daily prediction partitions are created this many days ahead of need (Postgres).
    partition_days_ahead: int = Field(default=7, ge=0)
    # Error details listed in one 4xx response; the total is always given.
    max_error_details: int = Field(default=10_000, ge=1)

    # Scheduled jobs (drift, calibration, cohorts, labels, retention).
    scheduler_enabled: bool = True
    job_interval_seconds: float = Field(default=300.0, gt=0)
    job_window_seconds: float = Field(default=3600.0, gt=0)
    # A subject the job window is too small to decide (below a minimum support: a quiet
    # model's drift or calibration, a small cohort) is decided over this longer horizon,
    # ending at the same boundary, when that can decide it; 0 turns it off. Whole buckets.
    job_long_window_seconds: float = Field(default=86_400.0, ge=0)
    # After downtime, at most this many missed windows per job and model are computed.
    job_catchup_windows: int = Field(default=12, ge=1)
    # Label-dependent jobs (calibration, cohorts, label coverage) evaluate the window that
    # ended this long ago, so that delayed labels have arrived; 0 evaluates the latest window.
    label_lag_seconds: float = Field(default=0.0, ge=0)
    # Silence, in seconds, after which a model's missing predictions page (the
    # ModelmonNoPredictions alert compares with the exported modelmon_model_expected_interval_
    # seconds). A model's policy may set its own, or null for a batch model that never fires it.
    expected_interval_seconds: float | None = Field(default=1800.0, gt=0)
    # Whether a model's critical findings page (true) or only make tickets (false): exported
    # as modelmon_model_paging; a model's policy may set its own.
    page: bool = True
    # Whether critical drift of a feature the serving version gives zero weight (importance 0
    # in its per-feature weights) pages like any other (true) or only makes a ticket (false,
    # the default: the version cannot react to it). Exported as
    # modelmon_model_unused_feature_paging; a model's policy may set its own.
    page_unused_features: bool = False
    # What a prediction carrying a feature its model does not declare does: "reject" refuses
    # the batch (422 naming the field); "record" stores the value with the record, unmonitored,
    # and counts it in modelmon_ingest_unexpected_features_total. A model's policy may set its own.
    unknown_features: Literal["reject", "record"] = "reject"
    retention_days: int = Field(default=30, ge=1)
    # Labels stored before their prediction, per model; past it a label batch that would add
    # more is refused (422 naming them). Retention counts them again exactly.
    max_pending_labels: int = Field(default=1_000_000, ge=0)
    # Stored results (metric_results) and job runs are kept this long: the history reports
    # and dashboards read them after the rows they were computed from are gone.
    results_retention_days: int = Field(default=90, ge=1)
    # Distinct values per cohort key kept in one bucket summary and in one window (jobs and
    # reports); the smallest beyond it are folded into "(other)" (the totals stay exact).
    summary_max_cohort_values: int = Field(default=1000, ge=2)
    retention_interval_seconds: float = Field(default=3600.0, gt=0)

    # References.
    reference_max_bytes: int = Field(default=512 * MIB, ge=1024)
    reference_sample_size: int = Field(default=10_000, ge=100)
    reference_bins: int = Field(default=10, ge=2, le=100)
    # Without an uploaded reference, a version is compared with its own first traffic: the
    # first `baseline_seconds` or first `baseline_max_predictions`, whichever ends first.
    baseline_seconds: float = Field(default=86_400.0, gt=0)
    baseline_max_predictions: int = Field(default=10_000, ge=100)

    # Weights.
    weights_max_bytes: int = Field(default=8 * 1024 * MIB, ge=1024)
    weights_zero_eps: float = Field(default=1e-8, ge=0)

    # Decision thresholds (defaults for every model). A decision needs the effect above its
    # line and the evidence: above the statistic's noise quantile at the window's n, at
    # alpha_warning for a warning (ticket) and alpha_critical for a critical (page), corrected
    # across the columns or cohorts tested (docs/metrics.md, "Decisions").
    threshold_alpha_warning: float = Field(default=1e-3, gt=0, lt=1)
    threshold_alpha_critical: float = Field(default=1e-4, gt=0, lt=1)
    # PSI bands for the reports (stable < moderate <= moderate band <= major < major). The
    # moderate line also sets the minimum support: a window too small for a PSI of 0.1 to
    # stand out from its noise is insufficient_data.
    threshold_psi_moderate: float = Field(default=0.1, ge=0)
    threshold_psi_major: float = Field(default=0.25, ge=0)
    # PSI lines of the decisions: warning above the larger of this and the noise quantile
    # (so above 0.015 only where the window is large enough), critical above 0.15.
    threshold_psi_warning: float = Field(default=0.015, ge=0)
    threshold_psi_critical: float = Field(default=0.15, ge=0)
    # KS D floor: a warning needs D above the larger of this and D's noise quantile.
    threshold_ks_d: float = Field(default=0.05, ge=0, le=1)
    threshold_ks_alpha: float = Field(default=0.05, gt=0, lt=1)
    threshold_min_n: int = Field(default=100, ge=1)
    # Above 0: the minimum support of a calibration decision is where its noise meets this line.
    threshold_ece_warning: float = Field(default=0.05, gt=0, le=1)
    threshold_ece_critical: float = Field(default=0.1, ge=0, le=1)
    # A cohort pages when its error rate is also at least this multiple of the rest's.
    threshold_cohort_ratio_critical: float = Field(default=1.5, ge=1)
    threshold_cohort_min_n: int = Field(default=100, ge=1)
    # Missing values: a warning when the missing rate rises this far above the reference's
    # (and beyond noise); a window with every value missing is critical.
    threshold_missing_rise: float = Field(default=0.1, gt=0, le=1)
    # Values the reference never had (a ticket, never a page): a warning when the share of a
    # numeric feature's values outside the reference's [min, max], or of a categorical
    # feature's values in no reference category, exceeds its baseline by this much (and
    # beyond noise).
    threshold_out_of_range_rise: float = Field(default=0.02, gt=0, le=1)
    threshold_new_category_rise: float = Field(default=0.02, gt=0, le=1)
    threshold_coverage_warning: float = Field(default=0.5, ge=0, le=1)
    threshold_calibration_bins: int = Field(default=10, ge=2, le=100)
    # Generalization gap: production error (its 95% interval's lower end) above the version's
    # registered validation error by more than these (error rate, or MAE in the target's unit).
    threshold_gap_warning: float = Field(default=0.02, ge=0)
    threshold_gap_critical: float = Field(default=0.05, ge=0)
    # A new version's weights against its predecessor's: the absolute change of the overall
    # sparsity (a ratio, 0.1 = ten points) and the largest absolute relative change of the
    # overall L1 or L2 norm beyond which the version check decides warning or critical.
    threshold_sparsity_jump_warning: float = Field(default=0.1, ge=0, le=1)
    threshold_sparsity_jump_critical: float = Field(default=0.2, ge=0, le=1)
    threshold_norm_jump_warning: float = Field(default=0.5, ge=0)

    # Authentication: "auto" requires API tokens whenever the service listens beyond loopback
    # (the laptop default on 127.0.0.1 stays open, and says so at start); "on" always; "off"
    # never (and warns loudly when listening beyond loopback).
    auth: Literal["auto", "on", "off"] = "auto"
    # A verified token is remembered this long: a revocation takes effect within it.
    token_cache_seconds: float = Field(default=5.0, ge=0)
    # Rate limits per caller (token, or client address when tokens are not required), per
    # process, averaged over MODELMON_RATE_LIMIT_BURST_SECONDS (the burst): requests to any
    # route but health, and records in ingest batches. 0 turns a limit off.
    rate_limit_requests_per_second: float = Field(default=200.0, ge=0)
    rate_limit_records_per_second: float = Field(default=100_000.0, ge=0)
    rate_limit_burst_seconds: int = Field(default=10, ge=1, le=3600)
    # Interactive docs (/docs, /redoc) and the OpenAPI spec (/openapi.json).
    docs_enabled: bool = True

    # /metrics.
    metrics_token: str | None = Field(default=None, description="bearer token for /metrics")
    metrics_cache_seconds: float = Field(default=5.0, ge=0)
    metrics_max_features: int = Field(default=50, ge=1)
    metrics_max_cohorts: int = Field(default=20, ge=1)
    metrics_max_layers: int = Field(default=100, ge=1)
    metrics_max_versions: int = Field(default=10, ge=1)
    # Results of windows that ended longer ago than this are no longer exported.
    metrics_max_result_age_seconds: float = Field(default=7200.0, gt=0)

    @model_validator(mode="after")
    def _windows_are_whole_buckets(self) -> Settings:
        ratio = self.job_window_seconds / self.job_interval_seconds
        if abs(ratio - round(ratio)) > 1e-9 or round(ratio) < 1:
            raise ValueError(
                "MODELMON_JOB_WINDOW_SECONDS must be a whole multiple of "
                "MODELMON_JOB_INTERVAL_SECONDS: windows are made of whole summary buckets")
        longer = self.job_long_window_seconds / self.job_interval_seconds
        if abs(longer - round(longer)) > 1e-9:
            raise ValueError(
                "MODELMON_JOB_LONG_WINDOW_SECONDS must be a whole multiple of "
                "MODELMON_JOB_INTERVAL_SECONDS: windows are made of whole summary buckets")
        return self

    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=1, le=65535)
    log_level: str = "info"
    # json: one JSON object a line (for log collectors); text: plain lines for a terminal;
    # auto: text when stderr is a terminal, JSON otherwise (containers, service managers).
    log_format: Literal["auto", "json", "text"] = "auto"
    # On SIGTERM: in-flight requests get this long to finish, then a running job window gets
    # this long to finish; one still running after that is abandoned (its transaction rolls
    # back, nothing of it is stored) and the process exits.
    shutdown_timeout_seconds: float = Field(default=10.0, gt=0)
    # `modelmon worker` serves its own /metrics (job runs, scheduler, process) here; port 0
    # turns it off. MODELMON_METRICS_TOKEN, when set, is required there too.
    worker_metrics_host: str = "127.0.0.1"
    worker_metrics_port: int = Field(default=8001, ge=0, le=65535)


@lru_cache
def get_settings() -> Settings:
    """The process-wide settings; tests build their own ``Settings`` and pass it to create_app."""
    return Settings()
