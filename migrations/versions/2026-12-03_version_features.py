"""a version's own feature list (a JSON column on model_versions)

Revision ID: 0013
Revises: 0011
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0013"
down_revision = "0011"
branch_labels = None
depends_on = None

JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def upgrade() -> None:
    # Nullable, no default: existing versions have the model's features; nothing is rewritten.
    op.add_column("model_versions", sa.Column("features", JSON, nullable=True))


def downgrade() -> None:
    # Plain ALTER TABLE ... DROP COLUMN (SQLite >= 3.35): a batch copy of model_versions
    # would cascade to the tables that reference it.
    op.drop_column("model_versions", "features")
