"""``modelmon migrate``: the schema to the latest revision, as a one-shot step of a deployment
(``serve --no-migrate`` then skips it)."""

from __future__ import annotations

import argparse
import json
from typing import Any

from app.cli.console import add_json
from app.settings import get_settings


def run(args: argparse.Namespace) -> int:
    from app.bootstrap import migrate

    revision = migrate(get_settings())
    print(json.dumps({"revision": revision}) if args.json else
          f"database at revision {revision}")
    return 0


def add_parser(sub: Any) -> None:
    mig = sub.add_parser("migrate", help="upgrade the database schema to the latest revision")
    add_json(mig, "print the revision as JSON: {\"revision\": ...}")
    mig.set_defaults(func=run)
