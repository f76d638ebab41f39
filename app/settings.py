"""One settings object for the whole service, read from ``MODELMON_*`` environment variables.

Every field carries its description: docs/operations.md's settings table is generated from
these fields (scripts/settings-table.py) and a test holds the two equal, so a setting cannot
be added without saying what it does.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Literal

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from app import settings_rules as rules
from app.settings_rules import ENV_PREFIX, ORDERED, listed, variable  # noqa: F401

MIB = 1024 * 1024


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore")

    # Database.
    database_url: str = Field(default="sqlite:///./modelmon.db", description=(
        "The store: by default a SQLite file in the working directory, nothing to set up; "
        "in production `postgresql+psycopg://user:pass@host:5432/db`."))
    db_connect_timeout_seconds: float = Field(default=3.0, gt=0, description=(
        "Seconds a connection attempt may take; past it the request is answered 503, so an "
        "unreachable database fails fast and never hangs a request."))
    db_statement_timeout_seconds: float = Field(default=30.0, gt=0, description=(
        "Seconds any one statement may run: PostgreSQL `statement_timeout` and "
        "`lock_timeout`, the SQLite busy timeout, so a stuck lock cannot hang a request."))
    db_hang_seconds: float = Field(default=3.0, gt=0, description=(
        "Seconds a request may wait on a PostgreSQL that stopped answering (a stopped "
        "process, a proxy that stops forwarding) before it is answered 503, whichever wait "
        "it is in: the pooled connection's check, a statement, the commit. A wait past a "
        "third of it makes the service ask the database, on a new connection, to answer "
        "within another third; if it does not, waits past two thirds are cut and new "
        "connections get the last third. Slow statements on a live database are left alone."))
    db_pool_size: int = Field(default=10, ge=1, description=(
        "Connections per process kept in the pool, plus as many overflow connections."))
    retry_after_seconds: int = Field(default=5, ge=1, description=(
        "Seconds in the `Retry-After` header of a 503."))

    # Requests and ingest.
    max_body_bytes: int = Field(default=10 * MIB, ge=1024, description=(
        "Bytes of one request body, also after gzip decompression (413 past it): bounds the "
        "memory one request can take."))
    body_read_timeout_seconds: float = Field(default=15.0, gt=0, description=(
        "Seconds a request body may stop arriving before it is answered 408 and its "
        "connection closed, so slow or stalled clients cannot hold connections and worker "
        "slots."))
    max_connections: int = Field(default=1000, ge=10, description=(
        "Connections one process keeps open at once. Past it, each new connection closes the "
        "oldest one with no request in progress (idle, or still sending its headers), so "
        "idle clients cannot crowd out new work; requests in progress past it are answered "
        "503 with `Retry-After`, except `/healthz`. `modelmon serve` raises the process's "
        "open-file limit towards its hard limit to fit it, and lowers it to what fits "
        "(docs/operations.md, Connections)."))
    idle_timeout_seconds: float = Field(default=5.0, gt=0, description=(
        "Seconds a connection may stay open sending nothing, fresh or between keep-alive "
        "requests, before it is closed. Behind a load balancer that keeps connections to the "
        "service, set it above the balancer's own idle timeout."))
    header_timeout_seconds: float = Field(default=10.0, gt=0, description=(
        "Seconds a request's header may take from its first byte to its end, however slowly "
        "it trickles (a byte now and then keeps a connection from being idle, not from this); "
        "past it, 408 and the connection closed."))
    max_concurrent_uploads: int = Field(default=4, ge=1, description=(
        "Uploads (references, weights) one process writes to temporary files at once; past "
        "it, 429 with `Retry-After`. A slot is taken only once an upload's body starts "
        "arriving."))
    ingest_slots: int = Field(default=4, ge=1, description=(
        "Batches (predictions, labels, imported summaries) one process stores at once; more "
        "wait their turn, and one that waits past `MODELMON_DB_HANG_SECONDS` gets 503."))
    max_batch_records: int = Field(default=10_000, ge=1, description=(
        "Records in one prediction or label batch: a batch is validated and stored as one, "
        "so this bounds its memory and transaction."))
    max_future_seconds: float = Field(default=86_400.0, ge=0, description=(
        "Seconds a timestamp may lie in the future (clock skew); later ones are refused."))
    max_past_days: int = Field(default=400, ge=1, description=(
        "Days a timestamp may lie in the past (never more than the retention); older ones are "
        "refused, since every accepted day costs a partition."))
    multiclass_sum_tolerance: float = Field(default=1e-3, gt=0, description=(
        "How far a multiclass prediction's class probabilities may sum from 1 and still be "
        "accepted (rounding by the model server)."))
    partition_days_ahead: int = Field(default=7, ge=0, description=(
        "Days of daily prediction partitions created ahead of need (PostgreSQL), so ingest "
        "never waits for one."))
    max_error_details: int = Field(default=10_000, ge=1, description=(
        "Problems listed in one 4xx response; the total is always given, so a huge bad batch "
        "cannot make a huge answer."))

    # Scheduled jobs (drift, calibration, cohorts, labels, retention).
    scheduler_enabled: bool = Field(default=True, description=(
        "Run the scheduled jobs inside `modelmon serve`; turn off on API replicas when "
        "`modelmon worker` runs them (keeping both is safe: a window is computed once)."))
    scheduler_process: Literal["child", "thread"] = Field(default="child", description=(
        "How `modelmon serve` runs the scheduled jobs: `child`, in one process of their own "
        "beside the serving process(es), at a lower CPU priority "
        "(MODELMON_SCHEDULER_NICE), restarted if it dies, its metrics on the same /metrics; "
        "`thread`, inside each serving process (a tick then competes with requests for the "
        "interpreter). An in-memory SQLite database always uses `thread`."))
    scheduler_nice: int = Field(default=10, ge=0, le=19, description=(
        "How much lower the CPU priority of `modelmon serve`'s scheduler process is than the "
        "serving process's (a nice increment): under load, requests get the cores first."))
    job_interval_seconds: float = Field(default=300.0, gt=0, description=(
        "Seconds between scheduler ticks, also the length of a summary bucket."))
    job_window_seconds: float = Field(default=3600.0, gt=0, description=(
        "Seconds of traffic one job window evaluates; a whole multiple of "
        "`MODELMON_JOB_INTERVAL_SECONDS`, since windows are made of whole buckets."))
    job_long_window_seconds: float = Field(default=86_400.0, ge=0, description=(
        "Seconds of the longer horizon, ending at the same boundary, over which a subject the "
        "job window is too small to decide (a quiet model's drift or calibration, a small "
        "cohort) is decided when that can decide it; 0 turns it off. A whole multiple of "
        "`MODELMON_JOB_INTERVAL_SECONDS`."))
    job_catchup_windows: int = Field(default=12, ge=1, description=(
        "Missed windows per job and model computed after downtime, so a long outage does "
        "not start with an unbounded backlog."))
    label_lag_seconds: float = Field(default=0.0, ge=0, description=(
        "Seconds ago the window evaluated by label-dependent jobs (calibration, cohorts, "
        "label coverage) ended, so that delayed labels have arrived; 0 evaluates the latest "
        "window. The default of each model's `label_lag_seconds` (docs/policy.md)."))
    expected_interval_seconds: float | None = Field(default=1800.0, gt=0, description=(
        "Seconds of silence after which a model's missing predictions page "
        "(ModelmonNoPredictions compares with the exported "
        "`modelmon_model_expected_interval_seconds`). The default of each model's "
        "`expected_interval_seconds`, which a batch model sets to null (never fires)."))
    page: bool = Field(default=True, description=(
        "Whether a model's critical findings page (true) or only make tickets (false); "
        "exported as `modelmon_model_paging`. The default of each model's `page`."))
    page_unused_features: bool = Field(default=False, description=(
        "Whether critical drift of a feature the serving version gives zero weight "
        "(importance 0 in its per-feature weights) pages like any other (true) or only makes "
        "a ticket (false: the version cannot react to it, a retrain would). Exported as "
        "`modelmon_model_unused_feature_paging`; the default of each model's "
        "`page_unused_features`."))
    unknown_features: Literal["reject", "record"] = Field(default="reject", description=(
        "What a prediction carrying a feature its model does not declare does: `reject` "
        "refuses the batch (422 naming the field); `record` stores the value with the record, "
        "unmonitored, and counts it in `modelmon_ingest_unexpected_features_total`. The "
        "default of each model's `unknown_features`."))
    retention_days: int = Field(default=30, ge=1, description=(
        "Days predictions, their idempotency keys, labels and bucket summaries are kept; "
        "older ones are removed (by dropping partitions on PostgreSQL)."))
    max_pending_labels: int = Field(default=1_000_000, ge=0, description=(
        "Labels stored before their prediction, per model; a label batch that would pass it "
        "is refused (422 naming the waiting labels), so labels for predictions that never "
        "come cannot grow without bound. Retention counts them again exactly."))
    pairing_locks: Literal["model", "striped"] = Field(default="model", description=(
        "How a label batch excludes its model's prediction batches: `model` (the earlier "
        "releases' lock: a model's label batches run one after another) or `striped` (one of 16 "
        "stripes: side by side), set only once no earlier release runs (docs/operations.md)."))
    results_retention_days: int = Field(default=90, ge=1, description=(
        "Days stored results (`metric_results`) and job runs are kept: the history reports "
        "and dashboards read them after the rows they were computed from are gone."))
    memo_max_rows: int = Field(default=200_000, ge=0, description=(
        "Costly pure figures (exact KS p-values, KS noise quantiles) kept in `memo_results`, "
        "shared by the scheduler's jobs and the pages and reports so each is computed once "
        "per window; each retention run keeps the newest this many (about 0.5 kB each)."))
    summary_max_cohort_values: int = Field(default=1000, ge=2, description=(
        "Distinct values per cohort key kept in one bucket summary and in one window (jobs "
        "and reports); the smallest beyond it fold into `(other)`, the totals staying exact."))
    retention_interval_seconds: float = Field(default=3600.0, gt=0, description=(
        "Seconds between runs of the retention job (what `MODELMON_RETENTION_DAYS` and "
        "`MODELMON_RESULTS_RETENTION_DAYS` remove), so expired rows go within this long."))

    # References.
    reference_max_bytes: int = Field(default=512 * MIB, ge=1024, description=(
        "Bytes of one reference data set upload (413 past it)."))
    reference_max_rows: int = Field(default=1_000_000, ge=100, description=(
        "Rows of one reference data set (413 past it), counted before its columns are "
        "converted: on a Parquet file's metadata, as a CSV streams in. Parquet columns are "
        "also held to `MODELMON_REFERENCE_MAX_BYTES` once decompressed (from the metadata), "
        "and a JSON reference, parsed whole into memory, to `MODELMON_MAX_BODY_BYTES`, after "
        "gzip decompression too: send larger ones as CSV or Parquet."))
    reference_min_rows: int = Field(default=100, ge=1, description=(
        "Rows below which a reference data set is accepted with a warning in the upload's "
        "answer (`warnings`) and the log: its bins (`MODELMON_REFERENCE_BINS`) hold too few "
        "rows for PSI and KS to tell drift from noise. The default matches "
        "`MODELMON_THRESHOLD_MIN_N`, the predictions a window needs to be decided."))
    max_clock_skew_seconds: float = Field(default=30.0, gt=0, description=(
        "Seconds this machine's clock may differ from the database's before it is logged "
        "(and ModelmonClockSkew fires). Windows and retention are decided on the database's "
        "clock whatever the skew."))
    summary_audit_interval_seconds: float = Field(default=3600.0, ge=0, description=(
        "Seconds between two audits of the summaries (0: never): every stored prediction "
        "and label of the last MODELMON_SUMMARY_AUDIT_LOOKBACK_SECONDS is compared, per "
        "bucket, with what the summaries count, and a bucket that differs is summarised "
        "again from its rows (rows written by an older release during a rolling upgrade, "
        "restored from a backup or copied in by hand)."))
    summary_audit_lookback_seconds: float = Field(default=21_600.0, gt=0, description=(
        "Seconds of closed buckets each summary audit compares (one grouped scan of their "
        "predictions and labels: at 1M predictions an hour, 6M rows by default). Raise it for "
        "one run after restoring older rows."))
    summary_rollup_hourly_after_seconds: float = Field(default=172_800.0, ge=0, description=(
        "Seconds after which a bucket's summaries are merged into one row per hour (exact: "
        "summaries add up); 0: never. Per model never less than what its jobs and the "
        "summary audit read back (the longer of `MODELMON_JOB_WINDOW_SECONDS` and "
        "`MODELMON_JOB_LONG_WINDOW_SECONDS`, the catch-up windows, its label lag and "
        "`MODELMON_SUMMARY_AUDIT_LOOKBACK_SECONDS`: 31 h by default), so no job window "
        "meets a rolled-up row; a report over older buckets is widened to whole hours "
        "(docs/operations.md, Roll-ups)."))
    summary_rollup_daily_after_seconds: float = Field(default=604_800.0, ge=0, description=(
        "Seconds after which a bucket's summaries are merged into one row per UTC day; 0: "
        "never. Not below `MODELMON_SUMMARY_ROLLUP_HOURLY_AFTER_SECONDS`; a report over "
        "older buckets is widened to whole days."))
    summary_rollup_batch: int = Field(default=1000, ge=1, description=(
        "Hours or days of summaries rolled up per scheduler tick (one transaction each), "
        "so a first roll-up of a long-filled store spreads over ticks."))
    summary_max_payload_bytes: int = Field(default=32 * MIB, ge=1024, description=(
        "Bytes one imported summary (POST /v1/summaries) may inflate to; past it the upload "
        "is refused (422) before the memory is spent. A dense drift summary takes 8 bytes a "
        "slot: about 8 MB for 50 numeric features with a 10,000-value KS sample."))
    reference_sample_size: int = Field(default=10_000, ge=100, description=(
        "Values per numeric feature kept of a reference for KS (evenly spaced order "
        "statistics): KS D against the sample is within 1/this of D against the whole "
        "reference."))
    reference_bins: int = Field(default=10, ge=2, le=100, description=(
        "PSI bins per numeric feature, at the reference's quantiles (duplicate edges "
        "merged)."))
    baseline_seconds: float = Field(default=86_400.0, gt=0, description=(
        "Seconds of a version's own first traffic it is compared with when no reference was "
        "uploaded (or the first `MODELMON_BASELINE_MAX_PREDICTIONS`, whichever ends first)."))
    baseline_max_predictions: int = Field(default=10_000, ge=100, description=(
        "Predictions at most in a version's baseline (its own first traffic, when no "
        "reference was uploaded), which bounds building it."))

    # Weights.
    weights_max_bytes: int = Field(default=8 * 1024 * MIB, ge=1024, description=(
        "Bytes of one weights file upload (413 past it); the file is read in chunks, so "
        "memory does not grow with it."))
    weights_max_inflated_bytes: int = Field(default=8 * 1024 * MIB, ge=1024, description=(
        "Bytes a weights file's tensors may hold once read: an .npz's members as their zip "
        "headers declare them uncompressed, a .safetensors file's tensors as their dtypes and "
        "shapes declare them. Checked on the headers before any tensor is read (413 naming "
        "the largest tensor past it), so a small compressed file cannot make the service "
        "decompress gigabytes; by default what `MODELMON_WEIGHTS_MAX_BYTES` allows "
        "uncompressed. A file's metadata parsed into memory (a safetensors header, an .npz's "
        "zip index) is held to `MODELMON_MAX_BODY_BYTES`, like any JSON body."))
    weights_zero_eps: float = Field(default=1e-8, ge=0, description=(
        "A weight counts as zero when |w| <= this: sparsity, zero counts and unused "
        "features (importance 0) of uploaded weights."))

    # Decision thresholds: the defaults of every model's policy (docs/policy.md). A decision
    # needs the effect above its line and the evidence above the statistic's noise quantile at
    # the window's n (docs/metrics.md, "Decisions").
    threshold_alpha_warning: float = Field(default=1e-3, gt=0, lt=1, description=(
        "Evidence a warning (ticket) needs: the statistic above its noise quantile at this "
        "level, corrected across the columns or cohorts tested; also the level of PSI's and "
        "ECE's minimum support (the embedding shift's is at the critical level)."))
    threshold_alpha_critical: float = Field(default=1e-4, gt=0, lt=1, description=(
        "Evidence a critical decision (page) needs, as `MODELMON_THRESHOLD_ALPHA_WARNING`; "
        "not above it."))
    threshold_psi_moderate: float = Field(default=0.1, ge=0, description=(
        "PSI band \"moderate\" of the reports (stable below it); also the minimum support: a "
        "window too small for this PSI to stand out from its noise is insufficient_data."))
    threshold_psi_major: float = Field(default=0.25, ge=0, description=(
        "PSI band \"major\" of the reports; not below the moderate one."))
    threshold_psi_warning: float = Field(default=0.015, ge=0, description=(
        "Drift warning when PSI is above the larger of this and its noise quantile (so above "
        "this line only where the window is large enough)."))
    threshold_psi_critical: float = Field(default=0.15, ge=0, description=(
        "Drift critical when PSI is above the larger of this and its noise quantile; not "
        "below the warning line."))
    threshold_ks_d: float = Field(default=0.05, ge=0, le=1, description=(
        "KS D floor: a KS warning needs D above the larger of this and D's noise quantile."))
    threshold_ks_alpha: float = Field(default=0.05, gt=0, lt=1, description=(
        "KS significance level after Benjamini-Hochberg across the features."))
    threshold_min_n: int = Field(default=100, ge=1, description=(
        "Predictions (drift, data quality, label coverage) or labeled predictions "
        "(calibration) below which a window is insufficient_data."))
    threshold_ece_warning: float = Field(default=0.05, gt=0, le=1, description=(
        "Calibration warning when ECE is above the larger of this and its null quantile; "
        "the minimum support of a calibration decision is where its noise meets this line."))
    threshold_ece_critical: float = Field(default=0.1, ge=0, le=1, description=(
        "Calibration critical when ECE is above the larger of this and its null quantile; "
        "not below the warning line."))
    threshold_oe_log_warning: float = Field(default=0.22, ge=0, description=(
        "Calibration warning when the observed positives O (correct top labels, multiclass) "
        "differ from the expected ones E (the sum of scores) by more than this on the log "
        "scale, either way (ln(O / E) above it or below minus it: 0.22 is a factor of "
        "1.25), with the Poisson-binomial p-value of O below "
        "`MODELMON_THRESHOLD_ALPHA_WARNING` corrected across the subjects tested: "
        "miscalibration at any base rate, where ECE stays small."))
    threshold_oe_log_critical: float = Field(default=0.4, ge=0, description=(
        "The same for a critical decision (0.4: a factor of 1.49), at "
        "`MODELMON_THRESHOLD_ALPHA_CRITICAL`; not below the warning line."))
    threshold_cbpe_drop_warning: float = Field(default=0.05, gt=0, le=1, description=(
        "Performance-estimation warning (a ticket) when a metric estimated from the scores "
        "alone (CBPE: accuracy, precision, recall or F1) falls this far below the "
        "reference's realized value, with the one-sided p-value of the drop (the estimate's "
        "Poisson-binomial variance) below `MODELMON_THRESHOLD_ALPHA_WARNING` corrected "
        "across the metrics tested."))
    threshold_cbpe_drop_critical: float = Field(default=1.0, gt=0, le=1, description=(
        "The same for a critical decision (a page), at `MODELMON_THRESHOLD_ALPHA_CRITICAL`. "
        "1 (the default) never pages: no metric in [0, 1] drops further; a policy that "
        "wants a page sets it lower, not below the warning line."))
    threshold_pca_error_warning: float = Field(default=0.1, ge=0, description=(
        "Multivariate drift warning when the window's mean PCA reconstruction error of the "
        "numeric features moved by more than this many of the reference's standard "
        "deviations (either way) from the reference's mean, with the z test's p-value below "
        "`MODELMON_THRESHOLD_ALPHA_WARNING` (the reference's own variance at the window's "
        "n, the reference mean's noise counted)."))
    threshold_pca_error_critical: float = Field(default=0.25, ge=0, description=(
        "The same for a critical decision, at `MODELMON_THRESHOLD_ALPHA_CRITICAL`; not below "
        "the warning line."))
    threshold_embedding_shift_warning: float = Field(default=0.1, ge=0, description=(
        "Embedding drift warning when an embedding feature's mean moved by more than the larger "
        "of this and its noise quantile (reference sds, whitened, the noise's expected part "
        "taken off), with the chi-square p-value below `MODELMON_THRESHOLD_ALPHA_WARNING` / m."))
    threshold_embedding_shift_critical: float = Field(default=0.25, ge=0, description=(
        "The same for a critical decision, at `MODELMON_THRESHOLD_ALPHA_CRITICAL`; not below "
        "the warning line; also the minimum support: a window too small for this shift to "
        "stand out from its noise at that level is insufficient_data."))
    threshold_cohort_ratio_critical: float = Field(default=1.5, ge=1, description=(
        "A cohort pages only when its error rate (MAE) is also at least this multiple of the "
        "rest's."))
    threshold_cohort_min_n: int = Field(default=100, ge=1, description=(
        "Labeled predictions a cohort needs to be decided at all; smaller ones never alert."))
    threshold_missing_rise: float = Field(default=0.1, gt=0, le=1, description=(
        "Data-quality warning when a feature's missing rate rises this far above the "
        "reference's (and beyond noise); a window with every value missing is critical."))
    threshold_out_of_range_rise: float = Field(default=0.02, gt=0, le=1, description=(
        "Data-quality warning (a ticket, never a page) when the share of a numeric feature's "
        "values outside the reference's [min, max] exceeds its baseline by this much (and "
        "beyond noise)."))
    threshold_new_category_rise: float = Field(default=0.02, gt=0, le=1, description=(
        "Data-quality warning (a ticket, never a page) when the share of a categorical "
        "feature's values in no reference category exceeds its baseline by this much (and "
        "beyond noise)."))
    threshold_coverage_warning: float = Field(default=0.5, ge=0, le=1, description=(
        "Label-coverage warning below this share of labeled predictions."))
    threshold_calibration_bins: int = Field(default=10, ge=2, le=100, description=(
        "Equal-width confidence bins of the calibration job (a report's `bins` parameter "
        "still overrides it for that report)."))
    threshold_gap_warning: float = Field(default=0.02, ge=0, description=(
        "Generalization-gap warning when the production error exceeds the version's "
        "registered validation error + this band (error rate, or MAE in the target's unit) "
        "by an exact one-sided test (Fisher's against the validation counts where "
        "`validation_rows` is registered) with p below `MODELMON_THRESHOLD_ALPHA_WARNING` / m, "
        "m the overall error and cohorts tested."))
    threshold_gap_critical: float = Field(default=0.05, ge=0, description=(
        "Generalization-gap critical, the same test with this band at "
        "`MODELMON_THRESHOLD_ALPHA_CRITICAL` / m."))
    threshold_gap_min_n: int = Field(default=100, ge=1, description=(
        "Labeled predictions the overall error or a cohort needs for its generalization gap "
        "to be decided (and counted among the subjects the alpha is corrected across); "
        "below it the figures are reported, never decided on."))
    threshold_sparsity_jump_warning: float = Field(default=0.1, ge=0, le=1, description=(
        "Version check warning when a version's overall weight sparsity moved more than "
        "this (absolute, as a ratio: 0.1 is ten points) from its predecessor's."))
    threshold_sparsity_jump_critical: float = Field(default=0.2, ge=0, le=1, description=(
        "The same for a critical decision (ModelmonVersionSparsityJump pages); not below the "
        "warning line."))
    threshold_norm_jump_warning: float = Field(default=0.5, ge=0, description=(
        "Version check warning when the overall L1 or L2 norm changed by more than this "
        "(absolute relative change) from the predecessor's; no critical line: a norm change "
        "alone makes a ticket."))

    # Authentication and limits (docs/security.md).
    auth: Literal["auto", "on", "off"] = Field(default="auto", description=(
        "`auto`: API tokens required whenever the service listens beyond loopback (the laptop "
        "default on 127.0.0.1 stays open, and says so at start); `on`: always; `off`: never "
        "(and warns loudly when listening beyond loopback). See docs/security.md."))
    token_cache_seconds: float = Field(default=5.0, ge=0, description=(
        "Seconds a verified token is remembered: a revocation takes effect within it."))
    token_outage_seconds: float = Field(default=3600.0, ge=0, description=(
        "Seconds a verified token stays usable while the database cannot be reached to check "
        "it again, so Prometheus keeps scraping /metrics through an outage (every other route "
        "needs the database anyway); a revocation made meanwhile takes effect once the "
        "database answers. At most 10,000 tokens are kept per process; 0 turns it off."))
    rate_limit_requests_per_second: float = Field(default=200.0, ge=0, description=(
        "Requests per second per caller (token, or client address when tokens are not "
        "required) and process to any route but health, averaged over "
        "`MODELMON_RATE_LIMIT_BURST_SECONDS`; 0 turns it off (docs/security.md)."))
    rate_limit_records_per_second: float = Field(default=100_000.0, ge=0, description=(
        "Records per second in ingest batches per caller and process, averaged over "
        "`MODELMON_RATE_LIMIT_BURST_SECONDS`; 0 turns it off."))
    rate_limit_burst_seconds: int = Field(default=10, ge=1, le=3600, description=(
        "Seconds over which the rate limits are averaged: the burst a caller may send at "
        "once."))
    rate_limit_auth_failures_per_second: float = Field(default=1.0, ge=0, description=(
        "Refused authentications (no token, a malformed, unknown, revoked or expired one) per "
        "second per client address and process, averaged over "
        "`MODELMON_RATE_LIMIT_BURST_SECONDS`; past it the address gets 429 before any token "
        "it sends is looked up in the database (a token verified within "
        "`MODELMON_TOKEN_CACHE_SECONDS` still passes). 0 turns it off."))
    trusted_proxies: str = Field(default="", description=(
        "Comma-separated addresses or networks (`10.0.0.0/8, 127.0.0.1`) of the reverse "
        "proxies in front of the service: only a request from one of them has its client "
        "address (rate limits, logs) taken from `MODELMON_FORWARDED_HEADER`; from anyone "
        "else that header is ignored. Empty (the default): no proxy is trusted."))
    forwarded_header: Literal["x-forwarded-for", "forwarded"] = Field(
        default="x-forwarded-for", description=(
            "The header the trusted proxies set the client address in: `x-forwarded-for` or "
            "`forwarded` (RFC 7239); the other one is ignored, since a proxy passes on "
            "whatever a client put in the header it does not manage itself."))
    allowed_hosts: str = Field(default="", description=(
        "Comma-separated host names accepted in the `Host` header besides loopback ones "
        "(`localhost`, `127.0.0.1`, `::1`) where tokens are not required and the service "
        "listens on loopback; any other host is refused (421), so a web page cannot reach "
        "the service through DNS rebinding."))
    docs_enabled: bool = Field(default=True, description=(
        "Serve the interactive docs (`/docs`, `/redoc`) and the OpenAPI spec "
        "(`/openapi.json`)."))
    docs_public: bool = Field(default=False, description=(
        "Serve the docs and the spec without a token where tokens are required; by default "
        "they need a token with the `read` scope, like the routes they describe."))
    pages_enabled: bool = Field(default=True, description=(
        "Serve the report pages under `/ui` (server-rendered HTML, no script, no CDN); they "
        "need a token with the `read` scope where tokens are required, presented as the "
        "login form's HttpOnly cookie or an `Authorization` header (docs/security.md)."))
    pages_cookie_secure: Literal["auto", "always", "never"] = Field(
        default="auto", description=(
            "The `Secure` attribute of the pages' login cookie: `auto` sets it when the "
            "request came over HTTPS (as the service or a trusted proxy sees it), `always` "
            "and `never` as said."))
    pages_runbook_base: str = Field(
        default="https://github.com/modelmon/modelmon/blob/main/docs/runbooks.md",
        max_length=2048, description=(
            "URL of the runbooks page the pages link each check to (the anchor is the "
            "alert's name in lower case), as `scripts/render-rules.py --runbook-base`."))
    pages_grafana_base: str | None = Field(
        default=None, max_length=2048, description=(
            "URL of the Grafana that holds the dashboards of dashboards/ (e.g. "
            "`https://grafana.example.com`): set, each check of a version page links the debug "
            "dashboard (`/d/modelmon-debug`) at the page's model, version and window; unset, no "
            "Grafana link is shown."))

    # /metrics.
    metrics_token: str | None = Field(default=None, description=(
        "A static bearer token for the scraper. Set, /metrics (`modelmon worker`'s too) "
        "requires it, or, where API tokens are required, accepts it beside any token with the "
        "`metrics`, `read` or `admin` scope; unset, /metrics is open unless API tokens are "
        "required (docs/security.md)."))
    metrics_cache_seconds: float = Field(default=5.0, ge=0, description=(
        "Seconds the model-quality values read from the database are reused across scrapes, "
        "so frequent or many scrapers cost a handful of small queries at most this often."))
    metrics_max_features: int = Field(default=50, ge=1, description=(
        "Features per model exported, the worst first; the rest fold into `__other__`, so no "
        "model can explode the TSDB."))
    metrics_max_cohorts: int = Field(default=20, ge=1, description=(
        "Cohorts per cohort key exported, the worst first; the rest fold into `__other__`."))
    metrics_max_layers: int = Field(default=100, ge=1, description=(
        "Weight layers per version exported, the sparsest first; the rest fold into "
        "`__other__`."))
    metrics_max_versions: int = Field(default=10, ge=1, description=(
        "Versions per model whose values are exported, the newest: old versions stop making "
        "series."))
    metrics_max_result_age_seconds: float = Field(default=7200.0, gt=0, description=(
        "Seconds after its window ended that a stored result stops being exported, so a "
        "silent job leaves no stale value behind for alerts to fire on."))

    # The process.
    host: str = Field(default="127.0.0.1", description=(
        "Address `modelmon serve` listens on; beyond loopback, `MODELMON_AUTH=auto` requires "
        "tokens."))
    port: int = Field(default=8000, ge=1, le=65535, description=(
        "Port `modelmon serve` listens on."))
    log_level: str = Field(default="info", description=(
        "`debug`, `info`, `warning` or `error`, for every logger (uvicorn's too)."))
    log_format: Literal["auto", "json", "text"] = Field(default="auto", description=(
        "`json`: one JSON object a line (for log collectors); `text`: plain lines for a "
        "terminal; `auto`: text when stderr is a terminal, JSON otherwise (containers, "
        "service managers)."))
    shutdown_timeout_seconds: float = Field(default=10.0, gt=0, description=(
        "On SIGTERM, seconds in-flight requests get to finish, then seconds a running job "
        "window gets; one still running after that is abandoned (nothing of it is stored) "
        "and the process exits (see Shutdown)."))
    worker_metrics_host: str = Field(default="127.0.0.1", description=(
        "Address of `modelmon worker`'s own /metrics and /healthz."))
    worker_metrics_port: int = Field(default=8001, ge=0, le=65535, description=(
        "Port of `modelmon worker`'s own /metrics and /healthz; 0 turns them off. Workers "
        "sharing a host need a port each (`--metrics-port`); a port in use stops the worker "
        "at start."))

    @field_validator("database_url")
    @classmethod
    def _known_database(cls, value: str) -> str:
        return rules.known_database(value)

    @field_validator("trusted_proxies")
    @classmethod
    def _proxies_are_addresses(cls, value: str) -> str:
        return rules.proxies_are_addresses(value)

    @model_validator(mode="after")
    def _consistent(self) -> Settings:
        rules.windows_are_whole_buckets(self)
        rules.rollups_keep_their_order(self)
        rules.thresholds_keep_their_order(self)
        return self


@lru_cache
def get_settings() -> Settings:
    """The process-wide settings; tests build their own ``Settings`` and pass it to create_app."""
    return Settings()
