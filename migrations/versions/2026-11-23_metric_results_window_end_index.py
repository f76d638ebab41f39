"""index metric_results by window_end: the /metrics snapshot reads the latest windows

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-23
"""

from __future__ import annotations

from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_metric_results_window_end", "metric_results", ["window_end"])


def downgrade() -> None:
    op.drop_index("ix_metric_results_window_end", table_name="metric_results")
