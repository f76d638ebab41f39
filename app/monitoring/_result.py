"""Shared plumbing for result dataclasses: status names and JSON-safe conversion."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np

OK = "ok"
INSUFFICIENT_DATA = "insufficient_data"
INVALID_INPUT = "invalid_input"
UNSUPPORTED_DTYPE = "unsupported_dtype"


def jsonable(value: Any) -> Any:
    """Convert results to plain JSON types, refusing NaN/inf.

    A non-finite float here would be a bug in this package (every statistic is meant to
    become None when undefined), so it raises instead of leaking into a report or an alert.
    """
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return [jsonable(v) for v in value.tolist()]
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        f = float(value)
        if not math.isfinite(f):
            raise ValueError("non-finite float in a monitoring result")
        return f
    if value is None or isinstance(value, str):
        return value
    raise TypeError(f"cannot convert {type(value).__name__} to JSON")


class JsonResult:
    """Mixin giving frozen result dataclasses a JSON-safe ``to_dict``."""

    def to_dict(self) -> dict[str, Any]:
        return jsonable(self)
