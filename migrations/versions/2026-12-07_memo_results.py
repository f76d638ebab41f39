"""memo results: costly pure figures (exact KS p-values, KS noise quantiles) by a digest of
their inputs, shared by the scheduler's jobs and the service's pages and reports

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "memo_results",
        sa.Column("key", sa.LargeBinary(32), nullable=False),
        sa.Column("value", sa.Text, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("key", name="pk_memo_results"),
    )
    op.create_index("ix_memo_results_created_at", "memo_results", ["created_at"])


def downgrade() -> None:
    # Only a cache of figures computed again on demand: nothing is lost.
    op.drop_index("ix_memo_results_created_at", table_name="memo_results")
    op.drop_table("memo_results")
