"""Shared checks for the monitoring tests."""

from __future__ import annotations

import json
from typing import Any


def assert_json_safe(result: Any) -> dict[str, Any]:
    """to_dict() must survive strict JSON (no NaN/inf) and round-trip unchanged."""
    d = result.to_dict()
    text = json.dumps(d, allow_nan=False)
    assert json.loads(text) == d
    return d
