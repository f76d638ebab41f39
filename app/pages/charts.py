"""Inline SVG charts over time and across features, drawn on the server from the reports'
and the stored results' numbers (no script, no external file): the ECDFs behind KS D, a
score's history with its threshold band, n per window and version changes, a sparkline, and
drift against importance. Every text is escaped; numbers are only scaled to pixels."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import numpy as np
from markupsafe import Markup, escape

from app.monitoring import KsCurves
from app.pages.svg import _n

REFERENCE, CURRENT, D_COLOUR = "#8a8f98", "#1f6fd1", "#c62828"
DECISION = {"ok": "#2e7d32", "warning": "#e08a00", "critical": "#c62828"}
MAX_STEPS = 240  # vertices per ECDF drawn (the point where D is attained always among them)


def _open(cls: str, width: int, height: int, label: str) -> str:
    return (f'<svg class="{cls}" width="{width}" height="{height}" role="img" '
            f'viewBox="0 0 {width} {height}" aria-label="{escape(label)}">')


def _thin(size: int, keep: int) -> np.ndarray:
    """At most MAX_STEPS indices of ``size``, evenly spread, always with ``keep``."""
    if size <= MAX_STEPS:
        return np.arange(size)
    idx = np.unique(np.round(np.linspace(0, size - 1, MAX_STEPS)).astype(int))
    return np.union1d(idx, [keep])


def ecdf(c: KsCurves, *, width: int = 440, height: int = 240) -> Markup:
    """Reference (grey) and current (blue) ECDFs as steps, and D (red) where attained."""
    pad = 30
    lo, hi = float(c.points[0]), float(c.points[-1])
    span = hi - lo or 1.0

    def px(v: float) -> float:
        return pad + (v - lo) / span * (width - 2 * pad)

    def py(v: float) -> float:
        return height - pad - v * (height - 2 * pad)

    idx = _thin(c.points.shape[0], c.index)
    parts = [_open("ecdf", width, height, "reference and current ECDFs"),
             f'<rect x="{pad}" y="{pad}" width="{width - 2 * pad}" '
             f'height="{height - 2 * pad}" fill="none" stroke="#ddd"/>']
    for ys, colour, name in ((c.reference, REFERENCE, "reference"),
                             (c.current, CURRENT, "current")):
        path = [f"M{_n(px(lo))} {_n(py(0.0))}"]
        for i in idx:
            path.append(f"H{_n(px(float(c.points[i])))}V{_n(py(float(ys[i])))}")
        path.append(f"H{_n(px(hi))}")
        parts.append(f'<path d="{"".join(path)}" fill="none" stroke="{colour}" '
                     f'stroke-width="1.5"><title>{name}</title></path>')
    x = px(c.at)
    label = escape(f"D = {c.statistic:.4g} {'at' if c.side == 'at' else 'just below'} "
                   f"{c.at:.4g}: reference {c.reference_at:.4g}, current {c.current_at:.4g}")
    parts.append(f'<g><title>{label}</title><line x1="{_n(x)}" y1="{_n(py(c.reference_at))}" '
                 f'x2="{_n(x)}" y2="{_n(py(c.current_at))}" stroke="{D_COLOUR}" '
                 f'stroke-width="2.5"/><circle cx="{_n(x)}" cy="{_n(py(c.reference_at))}" '
                 f'r="3" fill="{D_COLOUR}"/><circle cx="{_n(x)}" cy="{_n(py(c.current_at))}" '
                 f'r="3" fill="{D_COLOUR}"/></g>')
    parts.append(f'<text x="{pad}" y="{height - 8}">{escape(f"{lo:.4g}")}</text>'
                 f'<text x="{width - pad}" y="{height - 8}" text-anchor="end">'
                 f'{escape(f"{hi:.4g}")}</text></svg>')
    return Markup("".join(parts))


@dataclass(frozen=True)
class Point:
    """One stored window of a score: its end, value, n, decision and version."""

    end: datetime
    value: float | None
    n: int | None
    decision: str | None
    version: str | None


def _scale(values: Sequence[float], lines: Sequence[float]) -> float:
    return max([*values, *(v * 1.15 for v in lines), 1e-12])


@dataclass(frozen=True)
class Frame:
    """The pixels of a chart over time: x from the first window's end to the last's, y from
    0 to ``ymax`` above the strip of n bars."""

    width: int
    height: int
    t0: float
    tspan: float
    ymax: float
    pad: int = 34
    strip: int = 36

    def x(self, t: datetime) -> float:
        return self.pad + (t.timestamp() - self.t0) / self.tspan * (self.width - 2 * self.pad)

    def y(self, v: float) -> float:
        top = self.height - self.strip - 8
        return top - v / self.ymax * (top - 10)


def _lines(f: Frame, lines: dict[str, float | None]) -> list[str]:
    """The band between the warning and critical lines, and each line dashed."""
    out = []
    warn, crit = lines.get("warning"), lines.get("critical")
    if warn is not None:
        upper = f.y(crit) if crit is not None else 10
        shown = "none" if crit is None else f"{crit:.4g}"
        out.append(f'<rect x="{f.pad}" y="{_n(upper)}" width="{f.width - 2 * f.pad}" '
                   f'height="{_n(max(f.y(warn) - upper, 0))}" fill="#e08a00" '
                   f'fill-opacity="0.15"><title>between the warning line {warn:.4g} and the '
                   f'critical line {shown}</title></rect>')
    for name, v in lines.items():
        if v is not None:
            out.append(f'<line x1="{f.pad}" x2="{f.width - f.pad}" y1="{_n(f.y(v))}" '
                       f'y2="{_n(f.y(v))}" stroke="{DECISION.get(name, "#999")}" '
                       f'stroke-dasharray="5 3"><title>{escape(name)} {v:.4g}</title></line>')
    return out


def _windows(f: Frame, points: Sequence[Point]) -> list[str]:
    """Each window's dot (coloured by decision) and its n as a bar in the strip."""
    nmax = max([p.n or 0 for p in points] + [1])
    bar = max((f.width - 2 * f.pad) / max(len(points), 1) - 1, 1)
    out = []
    for p in points:
        x = f.x(p.end)
        h = (p.n or 0) / nmax * (f.strip - 4)
        shown = "none" if p.value is None else f"{p.value:.4g}"
        label = escape(f"{p.end.isoformat()} {p.version}: {shown}, n={p.n}, {p.decision}")
        dot = "" if p.value is None else (
            f'<circle cx="{_n(x)}" cy="{_n(f.y(p.value))}" r="2.5" '
            f'fill="{DECISION.get(p.decision or "", REFERENCE)}"/>')
        out.append(f'<g><title>{label}</title>{dot}<rect x="{_n(x - bar / 2)}" '
                   f'y="{_n(f.height - 4 - h)}" width="{_n(bar)}" height="{_n(h)}" '
                   f'fill="{REFERENCE}"/></g>')
    return out


def series(points: Sequence[Point], lines: dict[str, float | None],
           markers: dict[str, datetime], *, width: int = 640, height: int = 200) -> Markup:
    """A score per window (dots coloured by decision, joined), the band between its warning
    and critical lines, n per window as bars below, and each version's first window as a
    dashed mark."""
    if not points:
        return Markup("")
    t0 = points[0].end.timestamp()
    ymax = _scale([p.value for p in points if p.value is not None],
                  [v for v in lines.values() if v is not None])
    f = Frame(width, height, t0, (points[-1].end.timestamp() - t0) or 1.0, ymax)
    parts = [_open("series", width, height, "score per window with its lines and n"),
             *_lines(f, lines)]
    drawn = [(f.x(p.end), f.y(p.value)) for p in points if p.value is not None]
    if len(drawn) > 1:
        parts.append('<polyline fill="none" stroke="#444" points="'
                     + " ".join(f"{_n(x)},{_n(y)}" for x, y in drawn) + '"/>')
    parts += _windows(f, points)
    for version, at in markers.items():
        x = f.x(at)
        parts.append(f'<g><title>{escape(f"version {version} from {at.isoformat()}")}</title>'
                     f'<line x1="{_n(x)}" x2="{_n(x)}" y1="4" y2="{height - 4}" stroke="#333" '
                     f'stroke-dasharray="2 2"/><text x="{_n(x + 3)}" y="12">'
                     f'{escape(version)}</text></g>')
    parts.append("</svg>")
    return Markup("".join(parts))


def sparkline(values: Sequence[float | None], line: float | None, *, width: int = 96,
              height: int = 22) -> Markup:
    """The last windows' values as a line, with the warning line dashed."""
    known = [v for v in values if v is not None]
    if not known:
        return Markup("")
    ymax = _scale(known, [line] if line is not None else [])
    step = width / max(len(values) - 1, 1)

    def py(v: float) -> float:
        return height - 1 - v / ymax * (height - 3)

    pts = " ".join(f"{_n(i * step)},{_n(py(v))}" for i, v in enumerate(values) if v is not None)
    parts = [_open("spark", width, height, "the last windows' values and the line")]
    if line is not None:
        parts.append(f'<line x1="0" x2="{width}" y1="{_n(py(line))}" y2="{_n(py(line))}" '
                     f'stroke="#e08a00" stroke-dasharray="3 2"/>')
    parts.append(f'<polyline fill="none" stroke="{CURRENT}" points="{pts}"/></svg>')
    return Markup("".join(parts))


@dataclass(frozen=True)
class Dot:
    """A feature in the quadrant: its importance (x), PSI (y) and decision."""

    name: str
    importance: float
    psi: float
    decision: str | None


def quadrant(dots: Sequence[Dot], psi_line: float, importance_line: float, *,
             size: int = 300) -> Markup:
    """Drift (PSI) against importance: the upper right holds drifted features the model
    leans on; the lines are the PSI warning line and an equal share of importance."""
    pad = 34
    xmax = max([d.importance for d in dots] + [importance_line * 1.2, 1e-12])
    ymax = _scale([d.psi for d in dots], [psi_line])

    def px(v: float) -> float:
        return pad + v / xmax * (size - 2 * pad)

    def py(v: float) -> float:
        return size - pad - v / ymax * (size - 2 * pad)

    parts = [_open("quadrant", size, size, "drift against importance"),
             f'<rect x="{_n(px(importance_line))}" y="{pad}" '
             f'width="{_n(size - pad - px(importance_line))}" '
             f'height="{_n(max(py(psi_line) - pad, 0))}" fill="#c62828" fill-opacity="0.08"/>',
             f'<line x1="{pad}" x2="{size - pad}" y1="{_n(py(psi_line))}" '
             f'y2="{_n(py(psi_line))}" stroke="#e08a00" stroke-dasharray="4 3"/>',
             f'<line x1="{_n(px(importance_line))}" x2="{_n(px(importance_line))}" '
             f'y1="{pad}" y2="{size - pad}" stroke="#999" stroke-dasharray="4 3"/>',
             f'<text x="{size / 2}" y="{size - 8}" text-anchor="middle">importance</text>',
             f'<text x="12" y="{size / 2}" transform="rotate(-90 12 {size / 2})" '
             f'text-anchor="middle">PSI</text>']
    for d in dots:
        label = escape(f"{d.name}: PSI {d.psi:.4g}, importance {d.importance:.4g}, "
                       f"{d.decision}")
        parts.append(f'<circle cx="{_n(px(d.importance))}" cy="{_n(py(d.psi))}" r="4" '
                     f'fill="{DECISION.get(d.decision or "", REFERENCE)}" fill-opacity="0.8">'
                     f'<title>{label}</title></circle>')
    parts.append("</svg>")
    return Markup("".join(parts))
