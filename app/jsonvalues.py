"""The rules for JSON values the service stores, apart from HTTP: a parser that marks
non-finite numbers instead of accepting them, and the checks for strings, numbers and nesting
a database cannot store. The API reads bodies with them; ingest and the registry validate
with them.
"""

from __future__ import annotations

import json
import math
from typing import Any

import orjson

from app.errors import Malformed, Problem


class NonFinite:
    """Stands in for NaN, Infinity or an overflowing literal such as 1e999, so validation can
    name the field. It is never serialised: validation rejects every record that holds one."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "<non-finite number>"


NON_FINITE = NonFinite()


def _parse_float(s: str) -> float | NonFinite:
    v = float(s)
    return v if math.isfinite(v) else NON_FINITE


def _parse_constant(_s: str) -> NonFinite:
    return NON_FINITE


_decoder = json.JSONDecoder(parse_float=_parse_float, parse_constant=_parse_constant)


def parse_json(raw: bytes) -> Any:
    """Fast path: orjson, which refuses NaN, Infinity, overflowing numbers and lone surrogates.
    When it refuses anything, the standard parser reads the body again so that validation can
    name the field that holds the bad value (or the parse error's line and column)."""
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        pass
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise Malformed(
            "invalid_json", "request body is not valid UTF-8",
            [Problem(f"invalid UTF-8 at byte {exc.start}")],
        ) from None
    try:
        return _decoder.decode(text)
    except json.JSONDecodeError as exc:
        raise Malformed(
            "invalid_json", "request body is not valid JSON",
            [Problem(f"{exc.msg} at line {exc.lineno} column {exc.colno}")],
        ) from None
    except (ValueError, RecursionError) as exc:  # e.g. an integer literal with >4300 digits
        reason = "too deeply nested" if isinstance(exc, RecursionError) else "number too large"
        raise Malformed(
            "invalid_json", "request body is not valid JSON", [Problem(reason)]
        ) from None


def text_problem(value: str) -> str | None:
    """Strings a database cannot store: NUL characters (Postgres text and jsonb refuse them)
    and lone UTF-16 surrogates (not encodable as UTF-8)."""
    if "\x00" in value:
        return "must not contain NUL (\\u0000) characters"
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return "must be valid Unicode (lone surrogate escapes are refused)"
    return None


MAX_DEPTH = 64  # nesting levels of a JSON body this service accepts


def find_unstorable(obj: Any, path: str = "") -> list[tuple[str, str]]:
    """(path, problem) for every non-finite number, unstorable string or too deep nesting in a
    JSON value. Iterative, so no nesting can exhaust the stack; nothing deeper than MAX_DEPTH
    levels is looked into (that is one problem, at its path)."""
    found: list[tuple[str, str]] = []
    stack: list[tuple[Any, str, int]] = [(obj, path, 0)]
    while stack:
        value, where, depth = stack.pop()
        here = where or "$"
        if value is NON_FINITE:
            found.append((here, "must be a finite number (NaN, Infinity and overflowing "
                                "values are refused)"))
        elif isinstance(value, str):
            p = text_problem(value)
            if p:
                found.append((here, p))
        elif isinstance(value, (dict, list)):
            if depth >= MAX_DEPTH:
                found.append((here, f"nested deeper than {MAX_DEPTH} levels"))
                continue
            if isinstance(value, list):
                stack.extend((v, f"{where}[{i}]", depth + 1)
                             for i, v in reversed(list(enumerate(value))))
                continue
            children = []
            for k, v in value.items():
                sub = f"{where}.{k}" if where else str(k)
                p = text_problem(k)
                if p:
                    found.append((here, f"object key {p}"))
                    sub = f"{where}.<key>" if where else "<key>"
                children.append((v, sub, depth + 1))
            stack.extend(reversed(children))
        elif isinstance(value, int) and not isinstance(value, bool) and abs(value) >= 2**63:
            found.append((here, "integer out of range (at most 2**63 - 1 in magnitude)"))
    return found
