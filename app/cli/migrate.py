"""``modelmon migrate``: the schema to the latest revision, as a one-shot step of a deployment
(``serve --no-migrate`` then skips it)."""

from __future__ import annotations

import argparse
from typing import Any

from app.settings import get_settings


def run(_args: argparse.Namespace) -> int:
    from app.bootstrap import migrate

    print(f"database at revision {migrate(get_settings())}")
    return 0


def add_parser(sub: Any) -> None:
    mig = sub.add_parser("migrate", help="upgrade the database schema to the latest revision")
    mig.set_defaults(func=run)
