"""feature_weights: per-feature weights and importance of a version

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
JSON = sa.JSON().with_variant(JSONB(), "postgresql")


def upgrade() -> None:
    op.create_table(
        "feature_weights",
        sa.Column("version_id", ID, nullable=False),
        sa.Column("model_id", ID, nullable=False),
        sa.Column("tensor", sa.String(512), nullable=False),
        sa.Column("axis", sa.Integer(), nullable=False),
        sa.Column("nonzero", sa.Integer(), nullable=False),
        sa.Column("stats", JSON, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["version_id"], ["model_versions.id"], ondelete="CASCADE",
                                name="fk_feature_weights_version_id_model_versions"),
        sa.PrimaryKeyConstraint("version_id", name="pk_feature_weights"),
    )


def downgrade() -> None:
    op.drop_table("feature_weights")
