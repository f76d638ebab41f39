"""SQLAlchemy tables. Every change here is an Alembic migration under migrations/versions."""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(column_0_label)s",
        "uq": "uq_%(table_name)s_%(column_0_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

JsonType = JSON().with_variant(JSONB(), "postgresql")
# The predictions' documents are written once and read back whole, never queried inside:
# Postgres' json type only checks the text, where jsonb converts it (measured: 15% of the
# database's CPU per ingested batch; BENCHMARKS.md).
DocumentType = JSON()
# SQLite only autoincrements INTEGER PRIMARY KEY; Postgres gets a bigint identity.
IdType = BigInteger().with_variant(Integer(), "sqlite")

models = Table(
    "models",
    metadata,
    Column("id", IdType, primary_key=True, autoincrement=True),
    Column("name", String(128), nullable=False, unique=True),
    Column("task", String(32), nullable=False),
    # [{"name": ..., "type": "numeric" | "categorical"}], in registration order.
    Column("features", JsonType, nullable=False),
    Column("cohort_keys", JsonType, nullable=False),
    # Classification only; for binary, classes[1] is the positive class.
    Column("classes", JsonType, nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
    # The model's policy: the knobs it overrides (app/evaluation/policy.py); null for none.
    Column("policy", JsonType, nullable=True),
)

# Maintenance (retraining) windows: while one is open, the model's drift, calibration and
# cohort pages are suppressed by the alert rules (modelmon_model_maintenance); tickets flow.
maintenance_windows = Table(
    "maintenance_windows",
    metadata,
    Column("id", IdType, primary_key=True, autoincrement=True),
    Column("model_id", IdType, ForeignKey("models.id", ondelete="CASCADE"), nullable=False),
    Column("starts_at", DateTime(timezone=True), nullable=False),
    Column("ends_at", DateTime(timezone=True), nullable=False),
    Column("reason", Text, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Index("ix_maintenance_windows_model_ends", "model_id", "ends_at"),
)

model_versions = Table(
    "model_versions",
    metadata,
    Column("id", IdType, primary_key=True, autoincrement=True),
    Column("model_id", IdType, ForeignKey("models.id", ondelete="CASCADE"), nullable=False),
    Column("version", String(128), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("registered_at", DateTime(timezone=True), nullable=False),
    Column("metadata", JsonType, nullable=False),
    # The version's own feature list ([{name, type}]); null: the model's (revision 0013).
    Column("features", JsonType, nullable=True),
    UniqueConstraint("model_id", "version"),
)

# The idempotency ledger: one row per (model, prediction_id) ever accepted. Postgres cannot
# enforce a unique key across partitions unless it contains the partition key, so uniqueness
# lives here, in an unpartitioned table, and `predictions` holds the payload by day.
prediction_keys = Table(
    "prediction_keys",
    metadata,
    Column("model_id", IdType, primary_key=True),
    Column("prediction_id", String(200), primary_key=True),
    Column("ts", DateTime(timezone=True), nullable=False),
    Index("ix_prediction_keys_ts", "ts"),
)

# On Postgres this table is range-partitioned by day on `ts` (see the initial migration and
# app/storage/partitions.py); on SQLite it is a plain table.
predictions = Table(
    "predictions",
    metadata,
    Column("model_id", IdType, primary_key=True),
    Column("ts", DateTime(timezone=True), primary_key=True),
    Column("prediction_id", String(200), primary_key=True),
    Column("version_id", IdType, nullable=False),
    Column("received_at", DateTime(timezone=True), nullable=False),
    Column("features", DocumentType, nullable=False),
    Column("cohorts", DocumentType, nullable=False),
    Column("score", Float, nullable=True),
    Column("value", Float, nullable=True),
    Column("probabilities", DocumentType, nullable=True),
    Column("predicted_label", Text, nullable=True),
    Column("latency_ms", Float, nullable=True),
)

# Ground truth, joined to predictions by (model, prediction_id) at compute time, so a label may
# arrive before or after its prediction.
labels = Table(
    "labels",
    metadata,
    Column("model_id", IdType, primary_key=True),
    Column("prediction_id", String(200), primary_key=True),
    Column("label_class", Text, nullable=True),
    Column("label_value", Float, nullable=True),
    Column("ts", DateTime(timezone=True), nullable=False),
    Column("received_at", DateTime(timezone=True), nullable=False),
    # "labels" (POST /v1/labels) or "inline" (the `label` field of a prediction record).
    Column("source", String(16), nullable=False),
    Index("ix_labels_ts", "ts"),
)

# A version's reference: fitted bins, reference counts and a bounded sorted sample per feature
# and for the prediction. `source` is "upload" or "baseline" (the version's own early traffic).
reference_profiles = Table(
    "reference_profiles",
    metadata,
    Column("version_id", IdType, ForeignKey("model_versions.id", ondelete="CASCADE"),
           primary_key=True),
    Column("model_id", IdType, nullable=False),
    Column("source", String(16), nullable=False),
    Column("n_rows", Integer, nullable=False),
    Column("profile", JsonType, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
)

# Per-tensor weight statistics of a version; tensor "__all__" holds the overall figures.
weight_stats = Table(
    "weight_stats",
    metadata,
    Column("version_id", IdType, ForeignKey("model_versions.id", ondelete="CASCADE"),
           primary_key=True),
    Column("tensor", String(512), primary_key=True),
    Column("model_id", IdType, nullable=False),
    Column("stats", JsonType, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
)

# Per-feature weights of a version (one tensor's feature axis, in the model's feature order):
# per feature L1, L2, zero and importance share, and the count of non-zero features.
feature_weights = Table(
    "feature_weights",
    metadata,
    Column("version_id", IdType, ForeignKey("model_versions.id", ondelete="CASCADE"),
           primary_key=True),
    Column("model_id", IdType, nullable=False),
    Column("tensor", String(512), nullable=False),
    Column("axis", Integer, nullable=False),
    Column("nonzero", Integer, nullable=False),
    Column("stats", JsonType, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
)

version_deltas = Table(
    "version_deltas",
    metadata,
    Column("base_version_id", IdType, ForeignKey("model_versions.id", ondelete="CASCADE"),
           primary_key=True),
    Column("candidate_version_id", IdType,
           ForeignKey("model_versions.id", ondelete="CASCADE"), primary_key=True),
    Column("model_id", IdType, nullable=False),
    Column("delta", JsonType, nullable=False),
    Column("computed_at", DateTime(timezone=True), nullable=False),
)

# Time series of computed values: one row per (job, model, version, metric, subject, window).
# `subject` is "" for a model-level value, a feature name, or "cohort_key=cohort".
metric_results = Table(
    "metric_results",
    metadata,
    Column("id", IdType, primary_key=True, autoincrement=True),
    Column("job", String(32), nullable=False),
    Column("model_id", IdType, nullable=False),
    Column("version_id", IdType, nullable=False),
    Column("metric", String(64), nullable=False),
    Column("subject", String(512), nullable=False),
    Column("window_start", DateTime(timezone=True), nullable=False),
    Column("window_end", DateTime(timezone=True), nullable=False),
    Column("n", Integer, nullable=False),
    Column("value", Float, nullable=True),
    Column("decision", String(24), nullable=False),
    Column("method", String(128), nullable=False),
    Column("detail", JsonType, nullable=True),
    Column("computed_at", DateTime(timezone=True), nullable=False),
    UniqueConstraint("job", "model_id", "version_id", "metric", "subject", "window_start",
                     "window_end", name="uq_metric_results_window"),
    Index("ix_metric_results_model_metric_end", "model_id", "metric", "window_end"),
    Index("ix_metric_results_window_end", "window_end"),
    # /metrics: the latest window of each (job, version), one index descent each.
    Index("ix_metric_results_latest", "job", "model_id", "version_id", "window_end"),
)

# One row per attempt of a job for one model and window. At most one success per
# (job, model, window_end): the partial unique index is the last guard against a window being
# computed twice by two replicas.
job_runs = Table(
    "job_runs",
    metadata,
    Column("id", IdType, primary_key=True, autoincrement=True),
    Column("job", String(32), nullable=False),
    Column("model_id", IdType, nullable=True),
    Column("window_start", DateTime(timezone=True), nullable=False),
    Column("window_end", DateTime(timezone=True), nullable=False),
    Column("status", String(16), nullable=False),
    Column("started_at", DateTime(timezone=True), nullable=False),
    Column("finished_at", DateTime(timezone=True), nullable=True),
    Column("error", Text, nullable=True),
    Column("worker", String(128), nullable=False),
    Index("ix_job_runs_job_model_end", "job", "model_id", "window_end"),
    # /metrics: the last success and the last run per (job, model), one index descent each.
    Index("ix_job_runs_job_model_status_finished", "job", "model_id", "status", "finished_at"),
    Index("ix_job_runs_job_model_id", "job", "model_id", "id"),
    Index("uq_job_runs_success", "job", "model_id", "window_end", unique=True,
          postgresql_where=text("status = 'success'"), sqlite_where=text("status = 'success'")),
)

# Labeled predictions and wrong ones per model, counted when a prediction and its label are
# both stored (whichever came second). Monotonic, shared by every replica: the source of the
# SLO counters modelmon_labeled_predictions_total and modelmon_prediction_errors_total.
slo_counters = Table(
    "slo_counters",
    metadata,
    Column("model_id", IdType, ForeignKey("models.id", ondelete="CASCADE"), primary_key=True),
    Column("labeled", BigInteger, nullable=False),
    Column("errors", BigInteger, nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)

# Labels stored before their prediction (waiting to be paired), per model: kept in step by
# ingest (labels add, the predictions they wait for take away) and counted again exactly by
# retention, so that the cap on them (MODELMON_MAX_PENDING_LABELS) costs one row per batch.
pending_labels = Table(
    "pending_labels",
    metadata,
    Column("model_id", IdType, ForeignKey("models.id", ondelete="CASCADE"), primary_key=True),
    Column("n", BigInteger, nullable=False),
)

# Per-bucket summaries (app/evaluation/summaries.py): each prediction and each completed
# (prediction, label) pair is folded once into a row here, in the transaction that stores it.
# Rows of one (model, version, bucket, kind, profile_key) add up; the scheduler compacts the
# rows of closed buckets into one. `kind` is "outcome" (predictions counted, labeled sums) or
# "drift" (counts on the reference profile `profile_key`); `n` counts the predictions a row
# covers (0 for rows that only add labels).
bucket_summaries = Table(
    "bucket_summaries",
    metadata,
    Column("id", IdType, primary_key=True, autoincrement=True),
    Column("model_id", IdType, nullable=False),
    Column("version_id", IdType, nullable=False),
    Column("bucket_start", DateTime(timezone=True), nullable=False),
    Column("kind", String(8), nullable=False),
    Column("profile_key", String(32), nullable=False),
    Column("n", BigInteger, nullable=False),
    Column("payload", LargeBinary, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    # "" for summaries the service built from stored rows; IMPORTED for summaries a client
    # sent, which no stored row stands behind: never merged with the service's own, never
    # rebuilt from rows
    Column("origin", String(8), nullable=False, server_default=""),
    # The span the row covers from bucket_start: 0 for one job interval (as every row is
    # written), 3600 or 86400 for a row the roll-up merged into an hour or a day (revision
    # 0015)
    Column("bucket_seconds", Integer, nullable=False, server_default="0"),
    Index("ix_bucket_summaries_lookup", "model_id", "version_id", "bucket_start"),
    Index("ix_bucket_summaries_bucket_start", "bucket_start"),
)

# Summaries a client sent (POST /v1/summaries): one row per summary accepted, keyed so that
# a retried, duplicated or reordered upload is stored once. ``n`` and ``profile_key`` say how
# much of a bucket's summaries came from outside (no stored predictions stand behind them).
summary_imports = Table(
    "summary_imports",
    metadata,
    Column("source", String(128), primary_key=True),
    Column("model_id", IdType, primary_key=True),
    Column("version_id", IdType, primary_key=True),
    Column("bucket_start", DateTime(timezone=True), primary_key=True),
    Column("kind", String(8), primary_key=True),
    Column("sequence", BigInteger, primary_key=True),
    Column("profile_key", String(32), nullable=False),
    Column("n", BigInteger, nullable=False),
    Column("received_at", DateTime(timezone=True), nullable=False),
    Index("ix_summary_imports_bucket", "model_id", "version_id", "bucket_start"),
)

# Versions whose predictions were stored before summaries existed: rows received before
# `received_before` are summarised by the scheduler, once, then the entry is removed.
summary_backfill = Table(
    "summary_backfill",
    metadata,
    Column("version_id", IdType, primary_key=True),
    Column("model_id", IdType, nullable=False),
    Column("received_before", DateTime(timezone=True), nullable=False),
)

# API tokens (app/auth.py): the public id and the SHA-256 of the token, never the token.
api_tokens = Table(
    "api_tokens",
    metadata,
    Column("id", String(12), primary_key=True),
    Column("name", String(128), nullable=False),
    Column("digest", String(64), nullable=False),
    Column("scopes", JsonType, nullable=False),
    Column("models", JsonType, nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("expires_at", DateTime(timezone=True), nullable=True),
    Column("revoked_at", DateTime(timezone=True), nullable=True),
)

# Who did each administrative action: the token's id and name, what, on which model.
audit_log = Table(
    "audit_log",
    metadata,
    Column("id", IdType, primary_key=True, autoincrement=True),
    Column("at", DateTime(timezone=True), nullable=False),
    Column("token_id", String(12), nullable=True),
    Column("token_name", String(128), nullable=True),
    Column("action", String(64), nullable=False),
    Column("target", String(512), nullable=False),
    Column("status", Integer, nullable=False),
    Index("ix_audit_log_at", "at"),
)


# Ingest staging (PostgreSQL): a temporary table the ingest writer creates if missing in each
# write transaction, COPYs a batch into in binary and claims new keys from. JSON columns are
# text here and parsed once, when inserted.
STAGE_TABLE = "mm_stage_predictions"
STAGE_TYPES = (
    ("model_id", "int8"), ("ts", "timestamptz"), ("prediction_id", "text"),
    ("version_id", "int8"), ("received_at", "timestamptz"), ("features", "text"),
    ("cohorts", "text"), ("score", "float8"), ("value", "float8"), ("probabilities", "text"),
    ("predicted_label", "text"), ("latency_ms", "float8"), ("gt_class", "text"),
    ("gt_value", "float8"),
)
STAGE_DDL = (f"CREATE TEMP TABLE IF NOT EXISTS {STAGE_TABLE} ("
             + ", ".join(f"{c} {t}" for c, t in STAGE_TYPES) + ") ON COMMIT DELETE ROWS")

# Costly pure figures (an exact KS p-value, a KS noise quantile) by a digest of everything
# they are computed from, written by whichever process computes one first (a scheduler's job
# or a page in the service; app/storage/memo.py), so each is computed once per window and can
# never be stale. Retention keeps the newest MODELMON_MEMO_MAX_ROWS.
memo_results = Table(
    "memo_results",
    metadata,
    Column("key", LargeBinary(32), primary_key=True),
    Column("value", Text, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Index("ix_memo_results_created_at", "created_at"),
)
