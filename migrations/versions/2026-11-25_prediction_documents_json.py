"""predictions' features, cohorts and probabilities as json instead of jsonb (Postgres)

Written once by ingest and read back whole, never queried inside: json only checks the text,
where jsonb converts it on every insert. On Postgres this rewrites the predictions table (each
partition) once, under an exclusive lock: on a large installation, run it in a quiet hour.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-25
"""

from __future__ import annotations

from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

COLUMNS = ("features", "cohorts", "probabilities")


def _retype(to: str) -> None:
    if op.get_bind().dialect.name != "postgresql":
        return  # SQLite stores JSON as text either way
    op.execute("ALTER TABLE predictions "
               + ", ".join(f"ALTER COLUMN {c} TYPE {to} USING {c}::{to}" for c in COLUMNS))


def upgrade() -> None:
    _retype("json")


def downgrade() -> None:
    _retype("jsonb")
