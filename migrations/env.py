"""Alembic environment: runs against the connection `modelmon migrate` hands over, or against
MODELMON_DATABASE_URL when invoked through the alembic command."""

from __future__ import annotations

from alembic import context

from app.settings import Settings
from app.storage.db import make_engine
from app.storage.tables import metadata

config = context.config
target_metadata = metadata


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    engine = make_engine(Settings())
    with engine.connect() as conn:
        _run(conn)
    engine.dispose()


def _run(connection) -> None:  # noqa: ANN001
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",
    )
    with context.begin_transaction():
        context.run_migrations()


if context.is_offline_mode():
    raise SystemExit("offline (SQL script) migrations are not supported; run `modelmon migrate`")
run_migrations_online()
