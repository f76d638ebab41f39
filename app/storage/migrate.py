"""Alembic, driven from code: `modelmon migrate`, `modelmon serve` and /readyz use it."""

from __future__ import annotations

import logging
from importlib import resources
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util import CommandError
from sqlalchemy import Engine

from app.storage import locks

# migrations/ at the top of the repository, shipped inside the package as app.migrations
# (setup.py maps it), so an installed wheel carries them; installed wheels are unpacked, so
# the resource is a directory Alembic can read.
MIGRATIONS_DIR = Path(str(resources.files("app.migrations")))

log = logging.getLogger("modelmon.migrate")


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


def newer_than_release(revision: str | None) -> bool:
    """Whether ``revision`` is one this release's migrations do not know: a newer release
    migrated the database (a rolling upgrade in progress, or a rollback)."""
    if revision is None:
        return False
    try:
        return ScriptDirectory.from_config(_config()).get_revision(revision) is None
    except CommandError:
        return True


def upgrade(engine: Engine, revision: str = "head") -> None:
    """The schema to ``revision``. A database a newer release migrated is left as it is,
    with a warning: its migrations only add (docs/operations.md, Rolling upgrades), so this
    release serves on it, and a replica of it restarting during a rolling upgrade or a
    rollback starts instead of failing on a revision it cannot locate."""
    def ahead_or_upgrade(cfg: Config, target: str) -> None:
        current = MigrationContext.configure(cfg.attributes["connection"]).get_current_revision()
        if newer_than_release(current):
            log.warning("database at revision %s, newer than this release's %s (a newer "
                        "release migrated it): left as it is", current, head_revision())
            return
        command.upgrade(cfg, target)

    _run(engine, ahead_or_upgrade, revision)


def downgrade(engine: Engine, revision: str = "base") -> None:
    _run(engine, command.downgrade, revision)


def _run(engine: Engine, fn, revision: str) -> None:  # noqa: ANN001
    cfg = _config()
    with engine.begin() as conn:
        # Replicas starting together must not race each other through the same migration.
        locks.hold(conn, locks.MIGRATION)
        cfg.attributes["connection"] = conn
        fn(cfg, revision)
