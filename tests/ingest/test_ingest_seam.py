"""The ingest seam points one way: app/ingest returns what it stored (or raises Refused) and
the HTTP layer hands it to the metrics; observability imports nothing from ingest, ingest
nothing from the API or observability, and ingest rows are read by name."""

from __future__ import annotations

import re

from app.errors import Invalid, Problem
from app.ingest.outcome import Refused, rejected
from app.ingest.schema import ModelSchema
from app.storage.registry import ModelRow
from tests.conftest import ROOT

APP = ROOT / "app"


def _imports(package: str) -> list[str]:
    return [f"{p.relative_to(ROOT)}: {line.strip()}" for p in sorted((APP / package).rglob("*.py"))
            for line in p.read_text().splitlines()
            if re.match(r"\s*(from|import) app\.", line)]


def test_imports_point_down():
    assert [i for i in _imports("observability") if "app.ingest" in i] == []
    assert [i for i in _imports("ingest") if re.search(r"app\.(api|observability)\b", i)] == []


def test_ingest_rows_are_read_by_name():
    lines = [f"{p}:{n}" for p in sorted(APP.rglob("*.py")) if "migrations" not in p.parts
             for n, line in enumerate(p.read_text().splitlines(), 1)
             if re.search(r"\br\[[0-9]+\]", line) and p.parent.name in ("ingest", "observability")
             and p.name not in ("weights.py", "reference.py")]
    assert lines == []


def test_a_refusal_carries_what_to_count():
    row = ModelRow(1, "m", "binary_classification", [{"name": "x", "type": "numeric"}], [],
                   ["a", "b"], None)
    known = {"m": ModelSchema.build(row, {"v1": 1})}
    records = [{"model": "m"}, {"model": "m"}, {"model": "ghost"}, "junk"]
    problems = [Problem("bad", field="features.x", index=0),
                Problem("bad", field="features.zz", index=1),
                Problem("bad", field="features.x", index=2),  # not a registered model's
                Problem("bad", field="prediction_id", index=1)]
    counted = rejected(records, "predictions", known, problems)
    assert counted.records == {"m": 2, None: 2}
    assert counted.values == {("m", "x"): 1, ("m", None): 1}
    assert rejected(records, "labels", known, problems).values == {}
    err = Invalid("validation_error", "no", problems)
    assert Refused(err, counted).error is err
