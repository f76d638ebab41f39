"""The typed, frozen results of the checks serve the JSON the dict-built reports served, and
their findings store the same rows: tests/evaluation/data/report_cases.json holds what f0d4a86
gave for the cases of report_cases.py. Equal key by key, in order, every string and integer
exactly; a float within 1e-9 of its stored value, relative: the last digits of a p-value found
by root finding (the Poisson-binomial saddlepoint) differ from one machine's floating point to
another's, by 2.5e-10 at most between two machines of this project's."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from tests.evaluation import report_cases

STORED = Path(__file__).parent / "data" / "report_cases.json"


@pytest.fixture(scope="module")
def now() -> dict:
    return report_cases.cases()


@pytest.fixture(scope="module")
def before() -> dict:
    return json.loads(STORED.read_text())


def test_every_case_is_computed_and_the_set_covers_each_check(now, before):
    assert list(now) == list(before)
    assert len(before) > 50


RELATIVE = 1e-9


def differences(a, b, path: str = "") -> list[str]:
    """Where two decoded JSON documents differ: keys (in order), list lengths, strings,
    integers, booleans and nulls exactly; floats beyond ``RELATIVE``."""
    if isinstance(a, dict) and isinstance(b, dict):
        if list(a) != list(b):
            return [f"{path}: keys {list(a)} != {list(b)}"]
        return [d for k in a for d in differences(a[k], b[k], f"{path}/{k}")]
    if isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            return [f"{path}: {len(a)} items != {len(b)}"]
        return [d for i, (x, y) in enumerate(zip(a, b, strict=True))
                for d in differences(x, y, f"{path}[{i}]")]
    if isinstance(a, float) and isinstance(b, float):
        return [] if math.isclose(a, b, rel_tol=RELATIVE, abs_tol=1e-300) else [
            f"{path}: {a!r} != {b!r}"]
    return [] if (type(a), a) == (type(b), b) else [f"{path}: {a!r} != {b!r}"]


def test_differences_sees_each_kind_of_change():
    doc = {"a": [1, 0.5, "x", None, True], "b": {"c": 1e-12}}
    assert differences(doc, json.loads(json.dumps(doc))) == []
    assert differences(doc, {**doc, "a": [1, 0.5 * (1 + 1e-12), "x", None, True]}) == []
    for changed in ({**doc, "a": [1, 0.5 * (1 + 1e-8), "x", None, True]},
                    {**doc, "a": [1.0, 0.5, "x", None, True]},
                    {**doc, "a": [1, 0.5, "y", None, True]},
                    {**doc, "a": [1, 0.5, "x", None]},
                    {"b": doc["b"], "a": doc["a"]},
                    {**doc, "b": {"c": 2e-12}}):
        assert differences(doc, changed), changed


@pytest.mark.parametrize("name", list(json.loads(STORED.read_text())))
def test_a_case_serves_the_same_json_and_stores_the_same_findings(name, now, before):
    assert differences(json.loads(report_cases.dumps(now[name])), before[name]) == []


def test_the_whole_file_is_equal(now):
    assert differences(json.loads(report_cases.dumps(now)), json.loads(STORED.read_text())) == []
