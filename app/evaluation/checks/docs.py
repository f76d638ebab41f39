"""The docs' table of checks, rendered from the declarations (docs/jobs.md holds it between
markers; `python scripts/docs-tables.py --write` rewrites it, and a test holds them equal)."""

from __future__ import annotations

from app.evaluation.checks import CHECKS
from app.settings import Settings

BEGIN = ("<!-- checks: generated from app/evaluation/checks by "
         "`python scripts/docs-tables.py --write`; edit the declarations, not this table -->")
END = "<!-- end of checks -->"


def _knob(name: str) -> str:
    default = Settings.model_fields[f"threshold_{name}"].default
    return f"`{name}` ({default:g})" if isinstance(default, float) else f"`{name}` ({default})"


def checks_table() -> str:
    """One row per check: its name (the `check` label on /metrics), the job that stores it,
    what it is decided on, the knobs it reads with their defaults, the metrics it stores."""
    lines = ["| check | job | decided on | policy knobs (default) | stores in `metric_results` |",
             "| --- | --- | --- | --- | --- |"]
    for c in CHECKS:
        stores = "; ".join(
            f"`{s.name}`{' per ' + s.subject if s.subject else ''}"
            f"{'' if s.decides else ' (a figure)'}" for s in c.stores)
        knobs = ", ".join(_knob(k) for k in c.knobs)
        lines.append(f"| `{c.name}` | {c.job or '-'} | {c.summary} | {knobs} | "
                     f"{stores or 'nothing: decided when read'} |")
    return "\n".join(lines)


def replace_between(text: str, begin: str, end: str, body: str) -> str:
    """``text`` with what stands between the ``begin`` and ``end`` marker lines replaced."""
    head, found, rest = text.partition(begin + "\n")
    _, found_end, tail = rest.partition(end)
    if not found or not found_end:
        raise ValueError(f"markers not found: {begin!r} ... {end!r}")
    return f"{head}{begin}\n{body}\n{end}{tail}"
