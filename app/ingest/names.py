"""What a feature may be named: any printable text (scikit-learn's `mean radius`, `x/y`, a
non-ASCII letter) of 1 to MAX_FEATURE_NAME characters.

Names reach SQL only as bound parameters or JSON keys, Prometheus only as label values (any
UTF-8), CSV and Parquet references as column names, Spark as quoted columns: none of them
limits the characters further. Model and version names keep their narrower pattern
(app/api/schemas.py's NAME_PATTERN): they are URL path segments.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import WithJsonSchema

MAX_FEATURE_NAME = 128
# A feature name in a request: checked by the request that declares the features
# (check_feature_names), so that one 422 names every refused name, not pydantic's index each.
FeatureName = Annotated[str, WithJsonSchema({
    "type": "string", "minLength": 1, "maxLength": MAX_FEATURE_NAME,
    "description": "any printable text (spaces allowed), 1-128 characters"})]


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


def check_feature_names(names: list[str]) -> None:
    """ValueError (a request's 422) naming every refused name with its reason."""
    bad = feature_name_problems(list(names))
    if bad:
        raise ValueError(f"{len(bad)} feature name(s) refused: {'; '.join(bad)}. A feature "
                         f"name is any printable text (spaces allowed) of 1 to "
                         f"{MAX_FEATURE_NAME} characters")
