"""bucket summaries: per-bucket mergeable sums, and the backfill of earlier predictions

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-25
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "bucket_summaries",
        sa.Column("id", ID, autoincrement=True, nullable=False),
        sa.Column("model_id", ID, nullable=False),
        sa.Column("version_id", ID, nullable=False),
        sa.Column("bucket_start", sa.DateTime(timezone=True), nullable=False),
        sa.Column("kind", sa.String(8), nullable=False),
        sa.Column("profile_key", sa.String(32), nullable=False),
        sa.Column("n", sa.BigInteger, nullable=False),
        sa.Column("payload", sa.LargeBinary, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_bucket_summaries"),
    )
    op.create_index("ix_bucket_summaries_lookup", "bucket_summaries",
                    ["model_id", "version_id", "bucket_start"])
    op.create_index("ix_bucket_summaries_bucket_start", "bucket_summaries", ["bucket_start"])
    op.create_table(
        "summary_backfill",
        sa.Column("version_id", ID, nullable=False),
        sa.Column("model_id", ID, nullable=False),
        sa.Column("received_before", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("version_id", name="pk_summary_backfill"),
    )
    # Every version that already has predictions is summarised once by the scheduler.
    op.execute(
        "INSERT INTO summary_backfill (version_id, model_id, received_before) "
        "SELECT DISTINCT version_id, model_id, CURRENT_TIMESTAMP FROM predictions")


def downgrade() -> None:
    op.drop_table("summary_backfill")
    op.drop_index("ix_bucket_summaries_bucket_start", table_name="bucket_summaries")
    op.drop_index("ix_bucket_summaries_lookup", table_name="bucket_summaries")
    op.drop_table("bucket_summaries")
