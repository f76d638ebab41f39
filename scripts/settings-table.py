#!/usr/bin/env python3
"""Prints the settings reference of docs/operations.md, generated from app/settings.py.

    scripts/settings-table.py            # the markdown table, on stdout
    scripts/settings-table.py --write    # replace the table in docs/operations.md
    scripts/settings-table.py --check    # exit 1 when docs/operations.md's table is stale

--write and --check also cover docs/policy.md's table of policy knobs (each a setting's
service-wide default a model's policy may override), rendered from the same fields.

One row per ``Settings`` field: its environment variable, type and range, default and
description, so the code is the one source of what a setting does and the docs cannot drift
from it (tests/test_settings.py holds the two equal and refuses a field without a
description). The table sits between two marker comments; the prose around it is kept.
"""

from __future__ import annotations

import argparse
import sys
import typing
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pydantic.fields import FieldInfo  # noqa: E402

from app.evaluation import policy  # noqa: E402
from app.evaluation.checks.docs import replace_between  # noqa: E402
from app.settings import MIB, Settings, variable  # noqa: E402

DOC = ROOT / "docs" / "operations.md"
BEGIN = ("<!-- settings-table: generated from app/settings.py by "
         "`scripts/settings-table.py --write`; do not edit by hand -->")
END = "<!-- /settings-table -->"
POLICY_DOC = ROOT / "docs" / "policy.md"
POLICY_BEGIN = ("<!-- knobs-table: generated from app/settings.py and app/evaluation/policy.py "
                "by `scripts/settings-table.py --write`; do not edit by hand -->")
POLICY_END = "<!-- /knobs-table -->"


class MissingDescription(ValueError):
    """A settings field without a description: the table would have nothing to say."""


def _number(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def _range(info: FieldInfo) -> str:
    """The field's bounds as docs/policy.md writes them: ``> 0``, ``[2, 100]``, ``(0, 1)``."""
    low = high = None
    for m in info.metadata:
        for attr, is_low, strict in (("gt", True, True), ("ge", True, False),
                                     ("lt", False, True), ("le", False, False)):
            bound = getattr(m, attr, None)
            if bound is not None:
                if is_low:
                    low = ("(" if strict else "[", _number(bound))
                else:
                    high = (")" if strict else "]", _number(bound))
    if low and high:
        return f"in {low[0]}{low[1]}, {high[1]}{high[0]}"
    if low:
        return f"{'>' if low[0] == '(' else '>='} {low[1]}"
    if high:
        return f"{'<' if high[0] == ')' else '<='} {high[1]}"
    return ""


def type_of(info: FieldInfo) -> str:
    """The type an operator writes: the Literal's choices, or the base type and its range."""
    annotation = info.annotation
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if typing.get_origin(annotation) is typing.Literal:
        return " / ".join(f"`{a}`" for a in typing.get_args(annotation))
    if args and typing.get_origin(annotation) is not typing.Literal:
        annotation = args[0]
    name = getattr(annotation, "__name__", str(annotation))
    bounds = _range(info)
    return f"{name} {bounds}" if bounds else name


def default_of(name: str, info: FieldInfo) -> str:
    value = info.default
    if value is None:
        return "unset"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f"`{value}`" if value else "empty"
    shown = _number(value)
    if name.endswith("_bytes") and value % MIB == 0:
        mib = value // MIB
        shown += f" ({mib // 1024} GiB)" if mib % 1024 == 0 else f" ({mib} MiB)"
    return shown


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def table() -> str:
    """The markdown table of every settings field, in the order app/settings.py declares
    them; MissingDescription names any field without a description."""
    missing = [n for n, f in Settings.model_fields.items() if not (f.description or "").strip()]
    if missing:
        raise MissingDescription(
            "settings without a description (add Field(..., description=...) in "
            f"app/settings.py): {', '.join(variable(n) for n in missing)}")
    rows = ["| variable | type | default | description |", "| --- | --- | --- | --- |"]
    for name, info in Settings.model_fields.items():
        rows.append(f"| `{variable(name)}` | {_cell(type_of(info))} | "
                    f"{_cell(default_of(name, info))} | {_cell(info.description or '')} |")
    return "\n".join(rows) + "\n"


def knobs_table() -> str:
    """docs/policy.md's table: every policy knob, its default and setting, its type and
    range, where a feature or cohort key may override it, and what it does (the setting's
    description)."""
    rows = ["| knob | default (setting) | type | per feature / per cohort key | effect |",
            "| --- | --- | --- | --- | --- |"]
    for knob in (*policy.threshold_knobs(), *policy.MODEL_KNOBS):
        name = policy.setting_of(knob)
        info = Settings.model_fields[name]
        value = info.default
        shown = ("true" if value is True else "false" if value is False
                 else f'"{value}"' if isinstance(value, str) else _number(value))
        scope = ("feature" if knob in policy.PER_FEATURE_FIELDS
                 else "cohort key" if knob in policy.PER_COHORT_KEY_FIELDS else "no")
        rows.append(f"| `{knob}` | {shown} (`{variable(name)}`) | {_cell(type_of(info))} | "
                    f"{scope} | {_cell(info.description or '')} |")
    return "\n".join(rows) + "\n"


def replaced(doc: str, new_table: str, begin: str = BEGIN, end: str = END) -> str:
    """``doc`` with the text between the markers replaced by ``new_table``."""
    return replace_between(doc, begin, end, new_table.removesuffix("\n"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    action = parser.add_mutually_exclusive_group()
    action.add_argument("--write", action="store_true",
                        help="replace the table in docs/operations.md")
    action.add_argument("--check", action="store_true",
                        help="exit 1 when docs/operations.md's table differs from the settings")
    args = parser.parse_args(argv)
    try:
        new = table()
    except MissingDescription as exc:
        print(f"settings-table: error: {exc}", file=sys.stderr)
        return 1
    if not (args.write or args.check):
        sys.stdout.write(new)
        return 0
    stale = []
    for path, table_, begin, end in ((DOC, new, BEGIN, END),
                                     (POLICY_DOC, knobs_table(), POLICY_BEGIN, POLICY_END)):
        doc = path.read_text(encoding="utf-8")
        want = replaced(doc, table_, begin, end)
        if want != doc and args.write:
            path.write_text(want, encoding="utf-8")
        elif want != doc:
            stale.append(path.relative_to(ROOT))
    if stale:
        print(f"stale generated tables in {', '.join(map(str, stale))}: run "
              "scripts/settings-table.py --write", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
