"""summary roll-ups: the span a bucket summary row covers (0: one job interval; 3600 or
86400 for a row the roll-up merged into an hour or a day)

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # A constant default: no rewrite of existing rows, and a release that does not know the
    # column (a rolling upgrade) still writes rows of one job interval.
    op.add_column("bucket_summaries", sa.Column("bucket_seconds", sa.Integer, nullable=False,
                                                server_default="0"))


def downgrade() -> None:
    # Rows merged into hours or days cannot be split again, and an older release would read
    # each as one bucket of its job interval: the downgrade removes them (those hours and
    # days lose their summaries; docs/operations.md, Roll-ups).
    op.execute("DELETE FROM bucket_summaries WHERE bucket_seconds <> 0")
    op.drop_column("bucket_summaries", "bucket_seconds")
