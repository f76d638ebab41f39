"""summary imports: the ledger of summaries clients sent (exactly-once uploads), and the
origin of each bucket summary row

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None

ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    # A constant default: no rewrite of existing rows on PostgreSQL 11+ or SQLite.
    op.add_column("bucket_summaries", sa.Column("origin", sa.String(8), nullable=False,
                                                server_default=""))
    op.create_table(
        "summary_imports",
        sa.Column("source", sa.String(128), nullable=False),
        sa.Column("model_id", ID, nullable=False),
        sa.Column("version_id", ID, nullable=False),
        sa.Column("bucket_start", sa.DateTime(timezone=True), nullable=False),
        sa.Column("kind", sa.String(8), nullable=False),
        sa.Column("sequence", sa.BigInteger, nullable=False),
        sa.Column("profile_key", sa.String(32), nullable=False),
        sa.Column("n", sa.BigInteger, nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("source", "model_id", "version_id", "bucket_start", "kind",
                                "sequence", name="pk_summary_imports"),
    )
    op.create_index("ix_summary_imports_bucket", "summary_imports",
                    ["model_id", "version_id", "bucket_start"])


def downgrade() -> None:
    op.drop_index("ix_summary_imports_bucket", table_name="summary_imports")
    op.drop_table("summary_imports")
    op.drop_column("bucket_summaries", "origin")
