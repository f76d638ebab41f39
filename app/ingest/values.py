"""A record's JSON values as ingest reads them: numbers, embedding vectors, and the JSON type
of a value for messages (never the value itself)."""

from __future__ import annotations

from typing import Any

from app.jsonvalues import NonFinite


def describe(value: Any) -> str:
    """The JSON type of a value, for messages: never the value itself."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float, NonFinite)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


def as_float(value: Any) -> tuple[float | None, str | None]:
    """(finite float, None) or (None, problem)."""
    if type(value) is float:  # the common case first: the parser already refused non-finite
        return value, None
    if isinstance(value, NonFinite):
        return None, "must be a finite number (NaN, Infinity and overflowing values are refused)"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None, f"must be a number, got {describe(value)}"
    if isinstance(value, int):
        try:
            f = float(value)
        except OverflowError:
            return None, "number out of range"
        return f, None
    return value, None


def vector(value: Any, dim: int) -> tuple[list[float] | None, str | None]:
    """(``dim`` finite floats, None) or (None, problem)."""
    if not isinstance(value, list) or len(value) != dim:
        got = len(value) if isinstance(value, list) else describe(value)
        return None, f"must be a list of {dim} numbers, got {got}"
    floats = [as_float(x) for x in value]
    bad = next((j for j, (_, p) in enumerate(floats) if p), None)
    return ((None, f"element {bad} {floats[bad][1]}") if bad is not None
            else ([f for f, _ in floats], None))  # type: ignore[misc]
