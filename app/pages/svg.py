"""Small inline SVG pictures drawn on the server from the reports' numbers: no script, no
external file. Each function returns markup safe to embed (every text escaped); the numbers
they draw are the reports' own, only scaled to pixels."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from markupsafe import Markup, escape

REFERENCE, CURRENT = "#8a8f98", "#1f6fd1"
DECISION_COLOURS = {"ok": "#2e7d32", "warning": "#e08a00", "critical": "#c62828",
                    "insufficient_data": "#8a8f98"}


def _n(x: float) -> str:
    """A coordinate, short: one decimal at most."""
    return f"{x:.1f}".rstrip("0").rstrip(".")


def _shares(counts: Sequence[int]) -> list[float]:
    total = sum(counts)
    return [c / total if total else 0.0 for c in counts]


def histogram(bins: Sequence[str], reference: Sequence[int], current: Sequence[int], *,
              width: int = 168, height: int = 36) -> Markup:
    """Reference (grey) against current (blue) share per bin, side by side, from the
    stored bins; a bin's tooltip names it and both shares."""
    if not bins:
        return Markup("")
    ref, cur = _shares(reference), _shares(current)
    top = max([*ref, *cur, 1e-12])
    step = width / len(bins)
    bar = max(step / 2 - 0.5, 0.5)
    parts = [f'<svg class="hist" width="{width}" height="{height}" role="img" '
             f'viewBox="0 0 {width} {height}" aria-label="reference and current share '
             f'per bin">']
    for i, name in enumerate(bins):
        x = i * step
        hr, hc = ref[i] / top * (height - 1), cur[i] / top * (height - 1)
        label = escape(f"{name}: reference {ref[i]:.1%}, current {cur[i]:.1%}")
        parts.append(f'<g><title>{label}</title>'
                     f'<rect x="{_n(x)}" y="{_n(height - hr)}" width="{_n(bar)}" '
                     f'height="{_n(hr)}" fill="{REFERENCE}"/>'
                     f'<rect x="{_n(x + bar)}" y="{_n(height - hc)}" width="{_n(bar)}" '
                     f'height="{_n(hc)}" fill="{CURRENT}"/></g>')
    parts.append("</svg>")
    return Markup("".join(parts))


@dataclass(frozen=True)
class Point:
    """A reliability bin: mean confidence (x), observed rate (y) with its interval, count."""

    x: float
    y: float
    low: float
    high: float
    count: int


def reliability(points: Sequence[Point], *, size: int = 220) -> Markup:
    """The reliability diagram: observed rate against mean confidence per bin, with each
    bin's 95% interval, against the diagonal of a calibrated model."""
    pad = 28
    inner = size - 2 * pad

    def px(v: float) -> float:
        return pad + v * inner

    def py(v: float) -> float:
        return size - pad - v * inner

    parts = [f'<svg class="reliability" width="{size}" height="{size}" role="img" '
             f'viewBox="0 0 {size} {size}" aria-label="reliability diagram">',
             f'<rect x="{pad}" y="{pad}" width="{inner}" height="{inner}" fill="none" '
             f'stroke="#ccc"/>',
             f'<line x1="{_n(px(0))}" y1="{_n(py(0))}" x2="{_n(px(1))}" y2="{_n(py(1))}" '
             f'stroke="#999" stroke-dasharray="4 3"/>',
             f'<text x="{size / 2}" y="{size - 6}" text-anchor="middle">mean confidence'
             f'</text>',
             f'<text x="10" y="{size / 2}" transform="rotate(-90 10 {size / 2})" '
             f'text-anchor="middle">observed rate</text>']
    for p in points:
        label = escape(f"confidence {p.x:.3f}: observed {p.y:.3f} "
                       f"[{p.low:.3f}, {p.high:.3f}], n={p.count}")
        parts.append(f'<g><title>{label}</title>'
                     f'<line x1="{_n(px(p.x))}" y1="{_n(py(p.low))}" x2="{_n(px(p.x))}" '
                     f'y2="{_n(py(p.high))}" stroke="{CURRENT}"/>'
                     f'<circle cx="{_n(px(p.x))}" cy="{_n(py(p.y))}" r="3" '
                     f'fill="{CURRENT}"/></g>')
    parts.append("</svg>")
    return Markup("".join(parts))


def interval(value: float, low: float, high: float, rest: float | None, scale: float, *,
             decision: str, width: int = 180, height: int = 14) -> Markup:
    """One cohort's error (dot) with its interval (bar) on [0, scale], and the rest's
    error as a tick."""
    scale = scale if scale > 0 else 1.0

    def px(v: float) -> float:
        return 2 + min(max(v / scale, 0.0), 1.0) * (width - 4)

    colour = DECISION_COLOURS.get(decision, REFERENCE)
    mid = height / 2
    parts = [f'<svg class="interval" width="{width}" height="{height}" role="img" '
             f'viewBox="0 0 {width} {height}" aria-label="error with its interval">',
             f'<line x1="{_n(px(low))}" y1="{mid}" x2="{_n(px(high))}" y2="{mid}" '
             f'stroke="{colour}" stroke-width="3"/>',
             f'<circle cx="{_n(px(value))}" cy="{mid}" r="3.5" fill="{colour}"/>']
    if rest is not None:
        parts.append(f'<line x1="{_n(px(rest))}" y1="1" x2="{_n(px(rest))}" '
                     f'y2="{height - 1}" stroke="#333"/>')
    parts.append("</svg>")
    return Markup("".join(parts))
