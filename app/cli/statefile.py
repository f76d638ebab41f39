"""The ``--state`` files of `modelmon import` and `modelmon backfill`: a JSON document that
names the run it belongs to (its ``key``), replaced atomically after every step a re-run may
skip, so that a process killed at any moment leaves the last complete one."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from app.cli.errors import CliError


def load(path: Path | None, key: dict[str, Any], command: str, hint: str = ""
         ) -> dict[str, Any] | None:
    """The saved document, None when there is none yet; refused when it is not a state file
    or belongs to another run."""
    if path is None or not path.exists():
        return None
    try:
        saved = json.loads(path.read_text())
    except (OSError, ValueError):
        saved = None
    if not isinstance(saved, dict):
        raise CliError(f"--state {path} is not a state file of modelmon {command}")
    if saved.get("key") != key:
        raise CliError(f"--state {path} belongs to another {command} ({saved.get('key')}); "
                       f"give another path, or delete it to start over{hint}")
    return saved


def save(path: Path | None, doc: dict[str, Any]) -> None:
    if path is None:
        return
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(doc))
    os.replace(tmp, path)
