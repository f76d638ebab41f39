"""docs/prometheus.md's tables, rendered from the catalogue of families (families.py) between
marker comments, so the page cannot list a family /metrics does not export or miss one it does
(`python scripts/docs-tables.py --write` rewrites them; a test holds them equal)."""

from __future__ import annotations

from app.evaluation.catalogue import METRICS
from app.evaluation.checks.docs import replace_between
from app.observability.families import QUALITY_FAMILIES, SERVICE_FAMILIES, Family, Source

GENERATED = ("generated from app/observability/families.py by "
             "`python scripts/docs-tables.py --write`; edit the catalogue, not this table")
# (begin marker, end marker, the families of the table) per table of the page
TABLES = {
    "service": (f"<!-- service families: {GENERATED} -->", "<!-- end of service families -->",
                SERVICE_FAMILIES),
    "quality": (f"<!-- model-quality families: {GENERATED} -->",
                "<!-- end of model-quality families -->", QUALITY_FAMILIES),
}
SOURCES = {
    Source.SERVICE: "this process",
    Source.RUNTIME: "client library collector",
    Source.RESULT: "stored result",
    Source.DECISION: "decision",
    Source.REGISTRY: "registry",
    Source.JOBS: "job runs",
    Source.TRAFFIC: "stored predictions and labels",
}


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def _labels(f: Family) -> str:
    out = []
    for label in f.labels:
        cell = f"`{label}`"
        if label in f.values:
            cell += " = " + " \\| ".join(f"`{v}`" for v in f.values[label])
        if label in f.notes:
            cell += f" ({_cell(f.notes[label])})"
        out.append(cell)
    return ", ".join(out)


def _source(f: Family) -> str:
    stored = ", ".join(f"`{m}` ({METRICS[m].job})" for m in f.stored)
    return f"{SOURCES[f.source]}: {stored}" if stored else SOURCES[f.source]


def _meaning(f: Family) -> str:
    """The docs' text, else the help line, as a sentence without its full stop."""
    text = (f.doc or f.help).rstrip(".")
    return _cell(text[0].upper() + text[1:])


def families_table(families: dict[str, Family]) -> str:
    """One row per family: name as scraped, type, labels (with their documented values),
    where its values come from (a stored metric with its job), and what it means."""
    lines = ["| name | type | labels | source | meaning |", "| --- | --- | --- | --- | --- |"]
    for f in families.values():
        lines.append(f"| `{f.name}` | {f.type} | {_labels(f)} | {_source(f)} | "
                     f"{_meaning(f)} |")
    return "\n".join(lines)


def render(text: str) -> str:
    """``text`` (docs/prometheus.md) with every table replaced by the catalogue's."""
    for begin, end, families in TABLES.values():
        text = replace_between(text, begin, end, families_table(families))
    return text
