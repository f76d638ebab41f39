"""A page's window from its query (start, end, preset), and the links to the window before
and after it and to each preset; the reports widen it to whole buckets as they always do."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from urllib.parse import urlencode

from app.errors import Invalid, Problem
from app.evaluation import reports
from app.pages.views import Window
from app.settings import Settings

PRESETS = {"1h": 3600, "6h": 6 * 3600, "24h": 86400, "7d": 7 * 86400}


@dataclass
class Links:
    """The window shown, and the links to move it."""

    start: datetime
    end: datetime
    previous: str
    next: str | None
    presets: dict[str, str]


def resolve(settings: Settings, start: datetime | None, end: datetime | None,
            preset: str | None) -> Window:
    """The window the reports are asked for: start and end as given; a preset (a length) ends
    at ``end`` or at the latest window the jobs computed; 422 naming ``preset`` for an
    unknown one."""
    if preset is None:
        return Window(start, end)
    if preset not in PRESETS:
        raise Invalid("invalid_preset", f"preset must be one of {', '.join(PRESETS)}",
                      [Problem("unknown preset", field="preset")])
    _, stop = reports.window(settings, None, end)
    return Window(stop - timedelta(seconds=PRESETS[preset]), stop)


def _href(path: str, start: datetime, end: datetime) -> str:
    return f"{path}?{urlencode({'start': start.isoformat(), 'end': end.isoformat()})}"


def links(settings: Settings, path: str, shown: tuple[str, str],
          now: datetime | None = None) -> Links:
    """Previous and next windows of the same length as ``shown`` (the report's window, ISO
    strings); no next one after the latest window the jobs computed."""
    start, end = (datetime.fromisoformat(s) for s in shown)
    length = end - start
    _, latest = reports.window(settings, None, None, now=now or datetime.now(UTC))
    later = _href(path, start + length, end + length) if end < latest else None
    return Links(start, end, _href(path, start - length, end - length), later,
                 {name: _href(path, latest - timedelta(seconds=s), latest)
                  for name, s in PRESETS.items()})
