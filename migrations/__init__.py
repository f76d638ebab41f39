"""The Alembic migrations of the schema, shipped inside the package so that `modelmon migrate`
works wherever modelmon is installed (app/storage/migrate.py finds them through
importlib.resources; alembic.ini points the alembic command at them in a source checkout)."""
