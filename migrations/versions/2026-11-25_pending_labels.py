"""pending_labels: labels waiting for their prediction, counted per model

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-25
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "pending_labels",
        sa.Column("model_id", ID, nullable=False),
        sa.Column("n", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(["model_id"], ["models.id"], ondelete="CASCADE",
                                name="fk_pending_labels_model_id_models"),
        sa.PrimaryKeyConstraint("model_id", name="pk_pending_labels"),
    )
    # The labels already waiting, counted once.
    op.execute(
        "INSERT INTO pending_labels (model_id, n) SELECT l.model_id, count(*) FROM labels l "
        "WHERE NOT EXISTS (SELECT 1 FROM prediction_keys k WHERE k.model_id = l.model_id "
        "AND k.prediction_id = l.prediction_id) GROUP BY l.model_id")


def downgrade() -> None:
    op.drop_table("pending_labels")
