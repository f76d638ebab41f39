"""The rooms of docs/architecture.md and the direction of their imports: a room imports only
from the rooms below it. A new import that points up (storage reading evaluation, evaluation
reading the API, ...) fails here, naming the file and the line."""

from __future__ import annotations

import re

import pytest

from tests.conftest import ROOT

APP = ROOT / "app"
NEUTRAL = {"settings", "errors", "jsonvalues", "auth"}  # the root modules every room may use
# room -> the rooms it may import from (besides itself and NEUTRAL), as docs/architecture.md
# draws them
ALLOWED = {
    "monitoring": set(),
    "storage": set(),
    "evaluation": {"monitoring", "storage"},
    "observability": {"evaluation", "storage"},
    "jobs": {"evaluation", "storage"},
    "ingest": {"evaluation", "monitoring", "storage"},
    "registry": {"evaluation", "monitoring", "storage"},
    "api": {"registry", "ingest", "evaluation", "observability", "storage", "monitoring"},
    # the pages: the API's auth and report snapshot, the reports' own functions (and the
    # registry's weight comparison), drawn
    "pages": {"api", "evaluation", "monitoring", "registry", "storage"},
    # a producer beside the service: folds with the kernel, sends with the command line's client
    "spark": {"cli", "evaluation", "storage"},
}
IMPORT = re.compile(r"^\s*(?:from|import) app\.([a-z_]+)")


def _ups(room: str) -> list[str]:
    allowed = ALLOWED[room] | NEUTRAL | {room}
    return [f"{path.relative_to(ROOT)}:{n}: {line.strip()}"
            for path in sorted((APP / room).rglob("*.py"))
            for n, line in enumerate(path.read_text().splitlines(), 1)
            if (m := IMPORT.match(line)) and m.group(1) not in allowed]


@pytest.mark.parametrize("room", sorted(ALLOWED))
def test_a_room_imports_only_from_the_rooms_below_it(room):
    assert _ups(room) == []


def test_the_spark_adapter_takes_only_the_http_client_and_the_backfill_s_reader_from_cli():
    """The HTTP client, and for the file mode the backfill's unit of work (app/cli/lake.py:
    one way to read, join and fold a Parquet file)."""
    taken = [f"{path.relative_to(ROOT)}:{n}: {line.strip()}"
             for path in sorted((APP / "spark").rglob("*.py"))
             for n, line in enumerate(path.read_text().splitlines(), 1)
             if (m := IMPORT.match(line)) and m.group(1) == "cli"]
    assert taken and all(t.endswith(("from app.cli.client import ApiClient",
                                     "from app.cli import lake")) for t in taken), taken


def test_every_room_is_drawn():
    rooms = {p.name for p in APP.iterdir() if (p / "__init__.py").exists()}
    assert rooms - {"cli"} == set(ALLOWED)  # cli, the front door, may import any room


def test_an_upward_import_is_caught(tmp_path, monkeypatch):
    fake = tmp_path / "app"
    (fake / "storage").mkdir(parents=True)
    (fake / "storage" / "x.py").write_text("from app.evaluation import policy\n")
    monkeypatch.setitem(globals(), "APP", fake)
    monkeypatch.setitem(globals(), "ROOT", tmp_path)
    assert _ups("storage") == ["app/storage/x.py:1: from app.evaluation import policy"]
