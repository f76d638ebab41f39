"""Alembic, driven from code: `modelmon migrate`, `modelmon serve` and /readyz use it."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine

from app.storage import locks

# migrations/ at the top of the repository, shipped inside the package as app.migrations
# (setup.py maps it), so an installed wheel carries them; installed wheels are unpacked, so
# the resource is a directory Alembic can read.
MIGRATIONS_DIR = Path(str(resources.files("app.migrations")))


def _config() -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    return cfg


def head_revision() -> str:
    heads = ScriptDirectory.from_config(_config()).get_heads()
    if len(heads) != 1:
        raise RuntimeError(f"migrations must have exactly one head, found {heads}")
    return heads[0]


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def upgrade(engine: Engine, revision: str = "head") -> None:
    _run(engine, command.upgrade, revision)


def downgrade(engine: Engine, revision: str = "base") -> None:
    _run(engine, command.downgrade, revision)


def _run(engine: Engine, fn, revision: str) -> None:  # noqa: ANN001
    cfg = _config()
    with engine.begin() as conn:
        # Replicas starting together must not race each other through the same migration.
        locks.hold(conn, locks.MIGRATION)
        cfg.attributes["connection"] = conn
        fn(cfg, revision)
