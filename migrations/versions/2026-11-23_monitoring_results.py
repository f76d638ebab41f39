"""monitoring results: reference profiles, weight stats, version deltas, metric results, job runs

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

JSON = sa.JSON().with_variant(JSONB(), "postgresql")
ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
TS = sa.DateTime(timezone=True)


def _version_fk(column: str, table: str) -> sa.ForeignKeyConstraint:
    return sa.ForeignKeyConstraint([column], ["model_versions.id"], ondelete="CASCADE",
                                   name=f"fk_{table}_{column}_model_versions")


def upgrade() -> None:
    op.create_table(
        "reference_profiles",
        sa.Column("version_id", ID, nullable=False),
        sa.Column("model_id", ID, nullable=False),
        sa.Column("source", sa.String(16), nullable=False),
        sa.Column("n_rows", sa.Integer, nullable=False),
        sa.Column("profile", JSON, nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("version_id", name="pk_reference_profiles"),
        _version_fk("version_id", "reference_profiles"),
    )
    op.create_table(
        "weight_stats",
        sa.Column("version_id", ID, nullable=False),
        sa.Column("tensor", sa.String(512), nullable=False),
        sa.Column("model_id", ID, nullable=False),
        sa.Column("stats", JSON, nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("version_id", "tensor", name="pk_weight_stats"),
        _version_fk("version_id", "weight_stats"),
    )
    op.create_table(
        "version_deltas",
        sa.Column("base_version_id", ID, nullable=False),
        sa.Column("candidate_version_id", ID, nullable=False),
        sa.Column("model_id", ID, nullable=False),
        sa.Column("delta", JSON, nullable=False),
        sa.Column("computed_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("base_version_id", "candidate_version_id",
                                name="pk_version_deltas"),
        _version_fk("base_version_id", "version_deltas"),
        _version_fk("candidate_version_id", "version_deltas"),
    )
    op.create_table(
        "metric_results",
        sa.Column("id", ID, primary_key=True, autoincrement=True),
        sa.Column("job", sa.String(32), nullable=False),
        sa.Column("model_id", ID, nullable=False),
        sa.Column("version_id", ID, nullable=False),
        sa.Column("metric", sa.String(64), nullable=False),
        sa.Column("subject", sa.String(512), nullable=False),
        sa.Column("window_start", TS, nullable=False),
        sa.Column("window_end", TS, nullable=False),
        sa.Column("n", sa.Integer, nullable=False),
        sa.Column("value", sa.Float, nullable=True),
        sa.Column("decision", sa.String(24), nullable=False),
        sa.Column("method", sa.String(128), nullable=False),
        sa.Column("detail", JSON, nullable=True),
        sa.Column("computed_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_metric_results"),
        sa.UniqueConstraint("job", "model_id", "version_id", "metric", "subject",
                            "window_start", "window_end", name="uq_metric_results_window"),
    )
    op.create_index("ix_metric_results_model_metric_end", "metric_results",
                    ["model_id", "metric", "window_end"])
    op.create_table(
        "job_runs",
        sa.Column("id", ID, primary_key=True, autoincrement=True),
        sa.Column("job", sa.String(32), nullable=False),
        sa.Column("model_id", ID, nullable=True),
        sa.Column("window_start", TS, nullable=False),
        sa.Column("window_end", TS, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("started_at", TS, nullable=False),
        sa.Column("finished_at", TS, nullable=True),
        sa.Column("error", sa.Text, nullable=True),
        sa.Column("worker", sa.String(128), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_job_runs"),
    )
    op.create_index("ix_job_runs_job_model_end", "job_runs", ["job", "model_id", "window_end"])
    op.create_index("uq_job_runs_success", "job_runs", ["job", "model_id", "window_end"],
                    unique=True, postgresql_where=sa.text("status = 'success'"),
                    sqlite_where=sa.text("status = 'success'"))


def downgrade() -> None:
    op.drop_index("uq_job_runs_success", table_name="job_runs")
    op.drop_index("ix_job_runs_job_model_end", table_name="job_runs")
    op.drop_table("job_runs")
    op.drop_index("ix_metric_results_model_metric_end", table_name="metric_results")
    op.drop_table("metric_results")
    op.drop_table("version_deltas")
    op.drop_table("weight_stats")
    op.drop_table("reference_profiles")
