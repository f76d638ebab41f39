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
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
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
    Column("features", JsonType, nullable=False),
    Column("cohorts", JsonType, nullable=False),
    Column("score", Float, nullable=True),
    Column("value", Float, nullable=True),
    Column("probabilities", JsonType, nullable=True),
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
