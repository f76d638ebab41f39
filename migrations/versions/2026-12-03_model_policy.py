"""model policy (a JSON column on models) and maintenance windows

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def upgrade() -> None:
    # Nullable, no default: existing models follow the service-wide defaults; nothing is
    # rewritten.
    op.add_column("models", sa.Column("policy", JSON, nullable=True))
    op.create_table(
        "maintenance_windows",
        sa.Column("id", ID, autoincrement=True, nullable=False),
        sa.Column("model_id", ID, nullable=False),
        sa.Column("starts_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ends_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["model_id"], ["models.id"], ondelete="CASCADE",
                                name="fk_maintenance_windows_model_id_models"),
        sa.PrimaryKeyConstraint("id", name="pk_maintenance_windows"),
    )
    op.create_index("ix_maintenance_windows_model_ends", "maintenance_windows",
                    ["model_id", "ends_at"])


def downgrade() -> None:
    op.drop_index("ix_maintenance_windows_model_ends", table_name="maintenance_windows")
    op.drop_table("maintenance_windows")
    # Plain ALTER TABLE ... DROP COLUMN (SQLite >= 3.35): a batch copy of `models` would
    # cascade to every table that references it.
    op.drop_column("models", "policy")
