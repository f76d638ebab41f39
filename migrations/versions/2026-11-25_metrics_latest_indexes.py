"""indexes for /metrics: the last success and the last run per (job, model), and the latest
window of results per (job, version)

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-25
"""

from __future__ import annotations

from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_job_runs_job_model_status_finished", "job_runs",
                    ["job", "model_id", "status", "finished_at"])
    op.create_index("ix_job_runs_job_model_id", "job_runs", ["job", "model_id", "id"])
    op.create_index("ix_metric_results_latest", "metric_results",
                    ["job", "model_id", "version_id", "window_end"])


def downgrade() -> None:
    op.drop_index("ix_metric_results_latest", table_name="metric_results")
    op.drop_index("ix_job_runs_job_model_id", table_name="job_runs")
    op.drop_index("ix_job_runs_job_model_status_finished", table_name="job_runs")
