"""Reads the numbers a page shows: every element with ``data-field`` inside a row keyed by
``data-feature``, ``data-cohort``, ``data-check``, ``data-model``/``data-version`` (or the
element with an ``id`` around it), as the visible text a person reads."""

from __future__ import annotations

from collections import defaultdict
from html.parser import HTMLParser

KEYS = ("data-feature", "data-cohort", "data-check", "data-version", "id")
VOID = {"br", "input", "meta", "link", "img", "hr", "rect", "line", "circle"}


class Fields(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[tuple[str, dict[str, str | None]]] = []
        self.open: list[list] = []  # [tag depth, key, field, text]
        self.fields: dict[str, dict[str, str]] = defaultdict(dict)
        self.decisions: dict[str, str] = {}
        self.order: dict[str, list[str]] = defaultdict(list)

    def _row(self) -> str:
        for _tag, attrs in reversed(self.stack):
            for k in KEYS:
                if attrs.get(k):
                    return f"{k[5:] if k.startswith('data-') else k}:{attrs[k]}"
        return ""

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in VOID:
            return
        a = dict(attrs)
        self.stack.append((tag, a))
        for k in ("data-feature", "data-cohort", "data-check", "data-version"):
            if a.get(k):
                self.order[k[5:]].append(a[k])
        if "data-decision" in a and tag == "span":
            self.decisions.setdefault(self._row(), a["data-decision"] or "")
        if a.get("data-field"):
            self.open.append([len(self.stack), self._row(), a["data-field"], ""])

    def handle_endtag(self, tag: str) -> None:
        if tag in VOID or not self.stack:
            return
        depth = len(self.stack)
        for entry in [e for e in self.open if e[0] == depth]:
            self.fields[entry[1]][entry[2]] = entry[3].strip()
            self.open.remove(entry)
        self.stack.pop()

    def handle_data(self, data: str) -> None:
        for entry in self.open:
            entry[3] += data


def parse(html: str) -> Fields:
    p = Fields()
    p.feed(html)
    return p


def number(text: str) -> float | None:
    """A shown number: '–' is none, '12.5%' a share."""
    if text == "–":
        return None
    if text.endswith("%"):
        return float(text[:-1]) / 100
    return float(text)
