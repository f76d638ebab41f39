"""One file per revision, `YYYY-MM-DD_slug.py` (Alembic skips this file)."""
