"""initial schema: models, versions, prediction keys, predictions (partitioned on Postgres), labels

Revision ID: 0001
Revises:
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

JSON = sa.JSON().with_variant(JSONB(), "postgresql")
ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "models",
        sa.Column("id", ID, primary_key=True, autoincrement=True),
        sa.Column("name", sa.String(128), nullable=False),
        sa.Column("task", sa.String(32), nullable=False),
        sa.Column("features", JSON, nullable=False),
        sa.Column("cohort_keys", JSON, nullable=False),
        sa.Column("classes", JSON, nullable=True),
        sa.Column("created_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_models"),
        sa.UniqueConstraint("name", name="uq_models_name"),
    )
    op.create_table(
        "model_versions",
        sa.Column("id", ID, primary_key=True, autoincrement=True),
        sa.Column("model_id", ID, nullable=False),
        sa.Column("version", sa.String(128), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("registered_at", TS, nullable=False),
        sa.Column("metadata", JSON, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_model_versions"),
        sa.ForeignKeyConstraint(
            ["model_id"], ["models.id"], ondelete="CASCADE",
            name="fk_model_versions_model_id_models",
        ),
        sa.UniqueConstraint("model_id", "version", name="uq_model_versions_model_id"),
    )
    op.create_table(
        "prediction_keys",
        sa.Column("model_id", ID, nullable=False),
        sa.Column("prediction_id", sa.String(200), nullable=False),
        sa.Column("ts", TS, nullable=False),
        sa.PrimaryKeyConstraint("model_id", "prediction_id", name="pk_prediction_keys"),
    )
    op.create_index("ix_prediction_keys_ts", "prediction_keys", ["ts"])

    columns = [
        sa.Column("model_id", ID, nullable=False),
        sa.Column("ts", TS, nullable=False),
        sa.Column("prediction_id", sa.String(200), nullable=False),
        sa.Column("version_id", ID, nullable=False),
        sa.Column("received_at", TS, nullable=False),
        sa.Column("features", JSON, nullable=False),
        sa.Column("cohorts", JSON, nullable=False),
        sa.Column("score", sa.Float, nullable=True),
        sa.Column("value", sa.Float, nullable=True),
        sa.Column("probabilities", JSON, nullable=True),
        sa.Column("predicted_label", sa.Text, nullable=True),
        sa.Column("latency_ms", sa.Float, nullable=True),
        sa.PrimaryKeyConstraint("model_id", "ts", "prediction_id", name="pk_predictions"),
    ]
    if op.get_bind().dialect.name == "postgresql":
        # Daily range partitions are created at run time, ahead of need (partitions.py).
        op.create_table("predictions", *columns, postgresql_partition_by="RANGE (ts)")
    else:
        op.create_table("predictions", *columns)

    op.create_table(
        "labels",
        sa.Column("model_id", ID, nullable=False),
        sa.Column("prediction_id", sa.String(200), nullable=False),
        sa.Column("label_class", sa.Text, nullable=True),
        sa.Column("label_value", sa.Float, nullable=True),
        sa.Column("ts", TS, nullable=False),
        sa.Column("received_at", TS, nullable=False),
        sa.Column("source", sa.String(16), nullable=False),
        sa.PrimaryKeyConstraint("model_id", "prediction_id", name="pk_labels"),
    )
    op.create_index("ix_labels_ts", "labels", ["ts"])


def downgrade() -> None:
    op.drop_index("ix_labels_ts", table_name="labels")
    op.drop_table("labels")
    op.drop_table("predictions")  # drops every partition with it on Postgres
    op.drop_index("ix_prediction_keys_ts", table_name="prediction_keys")
    op.drop_table("prediction_keys")
    op.drop_table("model_versions")
    op.drop_table("models")
