"""What a feature may be named: any printable text (scikit-learn's `mean radius`, `x/y`, a
non-ASCII letter) of 1 to MAX_FEATURE_NAME characters.

Names reach SQL only as bound parameters or JSON keys, Prometheus only as label values (any
UTF-8), CSV and Parquet references as column names, Spark as quoted columns: none of them
limits the characters further. Model and version names keep their narrower pattern
(app/api/schemas.py's NAME_PATTERN): they are URL path segments.
"""

from __future__ import annotations

MAX_FEATURE_NAME = 128


def feature_name_problem(name: object) -> str | None:
    """Why ``name`` cannot be a feature's name; None when it can."""
    if not isinstance(name, str):
        return f"{name!r} is not a string"
    if not name:
        return "an empty name"
    if len(name) > MAX_FEATURE_NAME:
        return f"{name[:40]!r}... is {len(name)} characters long (at most {MAX_FEATURE_NAME})"
    if not name.isprintable():
        return f"{name!r} holds a control or other non-printable character"
    return None


def feature_name_problems(names: list[object]) -> list[str]:
    """Every refused name with its reason, in the order given."""
    return [p for p in map(feature_name_problem, names) if p is not None]
