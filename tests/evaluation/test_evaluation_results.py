"""The typed, frozen results of the checks serve the JSON the dict-built reports served,
byte for byte, and their findings store the same rows: tests/evaluation/data/
report_cases.json holds what f0d4a86 gave for the cases of report_cases.py."""

from __future__ import annotations

import json
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


@pytest.mark.parametrize("name", list(json.loads(STORED.read_text())))
def test_a_case_serves_the_same_json_and_stores_the_same_findings(name, now, before):
    assert report_cases.dumps(now[name]) == report_cases.dumps(before[name])


def test_the_whole_file_is_equal_byte_for_byte(now):
    assert report_cases.dumps(now) == STORED.read_text()
