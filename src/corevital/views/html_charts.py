"""Inline SVG charts of the HTML report: palettes, axes, line and bar charts over steps.

Drawn in Python as SVG text, so the page shows them with no script, no library and no network
(heat maps are in :mod:`corevital.views.html_heatmap`). Colours come from matplotlib's viridis and
cividis maps (perceptually uniform and readable with colour-vision deficiencies), sampled at 17
points and interpolated linearly. Missing values are never drawn as zero: a line has a gap.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from corevital.views.html_text import esc, fmt

WIDTH = 960
"""Width of every chart's viewBox; charts scale to the page width."""

MARK = "#d55e00"
"""Okabe–Ito vermillion: early warnings and blamed layers."""

MISSING = "#d0d0d0"
"""Fill of a heat-map cell without a value."""

MAX_LINE_POINTS = 1200
"""Longer series are drawn as the minimum and maximum of each block of steps."""

MAX_BARS = 600
"""More bars are drawn as block means."""

LEVELS = 32
_BAR = "#1f5fa8"
LEFT, RIGHT, TOP, BOTTOM = 52, 28, 16, 30


@dataclass(frozen=True)
class Palette:
    """A sequential colour map given by evenly spaced anchor colours (``#rrggbb``)."""

    name: str
    anchors: tuple[str, ...]

    def colour(self, t: float) -> str:
        """The colour at ``t`` in [0, 1] (clamped)."""
        t = min(max(t, 0.0), 1.0) * (len(self.anchors) - 1)
        i = min(int(t), len(self.anchors) - 2)
        a, b = _rgb(self.anchors[i]), _rgb(self.anchors[i + 1])
        f = t - i
        return "#" + "".join(f"{round(x + (y - x) * f):02x}" for x, y in zip(a, b, strict=True))

    def levels(self, count: int = LEVELS) -> list[str]:
        """``count`` colours from the low end to the high end."""
        return [self.colour(i / (count - 1)) for i in range(count)]


VIRIDIS = Palette(
    "viridis",
    (
        "#440154", "#48186a", "#472d7b", "#424086", "#3b528b", "#33638d", "#2c728e", "#26828e", "#21918c",
        "#1fa088", "#28ae80", "#3fbc73", "#5ec962", "#84d44b", "#addc30", "#d8e219", "#fde725",
    ),
)  # fmt: skip
CIVIDIS = Palette(
    "cividis",
    (
        "#00224e", "#002e6a", "#1a386f", "#32436d", "#434e6c", "#535a6d", "#61656f", "#6f7073", "#7d7c78",
        "#8c8878", "#9b9476", "#aba072", "#bcae6c", "#cdbb63", "#dec958", "#f0d846", "#fee838",
    ),
)  # fmt: skip


def _rgb(colour: str) -> tuple[int, int, int]:
    return int(colour[1:3], 16), int(colour[3:5], 16), int(colour[5:7], 16)


def text_colour(background: str) -> str:
    """Black or white, whichever reads better on ``background``."""
    r, g, b = (c / 255.0 for c in _rgb(background))
    luminance = 0.2126 * r**2.2 + 0.7152 * g**2.2 + 0.0722 * b**2.2
    return "#000" if luminance > 0.18 else "#fff"


@dataclass(frozen=True)
class Marker:
    """A step marked on the charts (an early-warning signal firing)."""

    step: int
    label: str


@dataclass(frozen=True)
class Span:
    """A shaded range of steps ``[start, end)`` (a repetition loop)."""

    start: int
    end: int
    label: str


def nice_ticks(lo: float, hi: float, count: int = 5) -> list[float]:
    """Round tick values covering ``[lo, hi]`` (the first is <= lo, the last >= hi)."""
    if not hi > lo:
        hi = lo + 1.0
    raw = (hi - lo) / max(count - 1, 1)
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 2.5, 5, 10) if m * power >= raw)
    first = math.floor(lo / step + 1e-9) * step
    ticks = [first]
    while ticks[-1] < hi - 1e-9 * step:
        ticks.append(first + len(ticks) * step)
    return [round(t, 12) for t in ticks]


def tick_labels(ticks: Sequence[float]) -> list[str]:
    """Labels of evenly spaced ticks, with as many decimals as their spacing needs."""
    if len(ticks) < 2:
        return [fmt(t) for t in ticks]
    step = abs(ticks[1] - ticks[0]) or 1.0
    if step >= 1e5 or step < 1e-4:
        return [fmt(t) for t in ticks]
    decimals = max(0, -math.floor(math.log10(step) + 1e-9))
    if round(step * 10**decimals, 6) % 1:  # 2.5 x 10^k
        decimals += 1
    return [f"{t:.{decimals}f}" for t in ticks]


def int_ticks(last: int) -> list[int]:
    return sorted({int(t) for t in nice_ticks(0, max(last, 1), 6) if 0 <= t <= last})


def num(value: float) -> str:
    return f"{value:.1f}".rstrip("0").rstrip(".")


def x_tick(x: float, bottom: float, label: object) -> list[str]:
    """A tick mark at ``x`` under the x axis (drawn at ``bottom``) and its ``label`` below it."""
    return [
        f'<line class="axis" x1="{num(x)}" x2="{num(x)}" y1="{num(bottom)}" y2="{num(bottom + 4)}"/>',
        f'<text class="tick" x="{num(x)}" y="{num(bottom + 15)}" text-anchor="middle">{label}</text>',
    ]


def figure(title: str, svg: str, notes: Sequence[str], css_class: str) -> str:
    body = "".join(f'<p class="note">{note}</p>' for note in notes if note)
    return f'<figure class="{css_class}"><figcaption>{esc(title)}</figcaption>{svg}{body}</figure>'


def empty_figure(title: str, why: str) -> str:
    return figure(title, "", [esc(why)], "chart empty")


def _line_points(values: Sequence[float | None]) -> list[tuple[float, float] | None]:
    """(step, value) points with ``None`` where the line breaks; long series as block min/max."""
    n = len(values)
    if n <= MAX_LINE_POINTS:
        return [(float(i), v) if v is not None else None for i, v in enumerate(values)]
    block = math.ceil(n / (MAX_LINE_POINTS // 2))
    points: list[tuple[float, float] | None] = []
    for start in range(0, n, block):
        chunk = [(start + j, v) for j, v in enumerate(values[start : start + block]) if v is not None]
        if not chunk:
            points.append(None)
            continue
        low, high = min(chunk, key=lambda p: p[1]), max(chunk, key=lambda p: p[1])
        points.extend((float(i), v) for i, v in sorted({low, high}))
    return points


class Plot:
    """A linear map from data to SVG coordinates."""

    def __init__(self, lo: float, hi: float, start: float, end: float) -> None:
        self.lo, self.hi, self.start, self.end = lo, hi, start, end

    def __call__(self, value: float) -> float:
        span = self.hi - self.lo or 1.0
        return self.start + (value - self.lo) / span * (self.end - self.start)


def _axes(
    x_of: Plot, y_ticks: Sequence[float], x_ticks: Sequence[int], x_label: str, y_of: Plot
) -> list[str]:
    parts = []
    for tick, label in zip(y_ticks, tick_labels(y_ticks), strict=True):
        y = y_of(tick)
        parts.append(f'<line class="grid" x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{num(y)}" y2="{num(y)}"/>')
        parts.append(f'<text class="tick" x="{LEFT - 5}" y="{num(y + 3.5)}" text-anchor="end">{label}</text>')
    bottom = y_of(y_ticks[0])
    for step in x_ticks:
        parts.extend(x_tick(x_of(step), bottom, step))
    parts.append(
        f'<line class="axis" x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{num(bottom)}" y2="{num(bottom)}"/>'
    )
    parts.append(f'<line class="axis" x1="{LEFT}" x2="{LEFT}" y1="{TOP}" y2="{num(bottom)}"/>')
    parts.append(
        f'<text class="axis-label" x="{WIDTH - RIGHT}" y="{num(bottom + 27)}" text-anchor="end">'
        f"{esc(x_label)}</text>"
    )
    return parts


def marker_marks(markers: Sequence[Marker], x_of: Plot, top: float, bottom: float, lines: bool) -> list[str]:
    parts = []
    for marker in markers:
        x = x_of(marker.step)
        title = f"<title>{esc(marker.label)} at step {marker.step}</title>"
        if lines:
            parts.append(
                f'<line class="marker" x1="{num(x)}" x2="{num(x)}" y1="{num(top)}" y2="{num(bottom)}">'
                f"{title}</line>"
            )
        parts.append(f'<path class="marker-head" d="M{num(x - 5)} {num(top - 9)}h10l-5 8z">{title}</path>')
    return parts


def line_chart(
    values: Sequence[float | None],
    *,
    title: str,
    markers: Sequence[Marker] = (),
    spans: Sequence[Span] = (),
    domain: tuple[float, float] | None = None,
    height: int = 190,
    x_label: str = "generated step",
    step_labels: Sequence[str] | None = None,
) -> str:
    """A line over steps; ``None`` values leave gaps. ``domain`` fixes the y range (else the data's).

    Hovering a step shows its value, after ``step_labels[i]`` (HTML text) when given; runs longer
    than :data:`MAX_LINE_POINTS` have no per-step hover.
    """
    present = [v for v in values if v is not None]
    if not present:
        return empty_figure(title, "No values were recorded for this metric.")
    lo, hi = domain if domain is not None else (min(present), max(present))
    if hi - lo < 1e-12:
        lo, hi = lo - (abs(lo) * 0.1 or 0.5), hi + (abs(hi) * 0.1 or 0.5)
    y_ticks = nice_ticks(lo, hi)
    last = max(len(values) - 1, 1)
    x_of = Plot(0, last, LEFT, WIDTH - RIGHT)
    bottom = height - BOTTOM
    y_of = Plot(y_ticks[0], y_ticks[-1], bottom, TOP)
    parts = [
        f'<rect class="span" x="{num(x_of(s.start))}" y="{TOP}"'
        f' width="{num(max(x_of(s.end) - x_of(s.start), 1))}" height="{num(bottom - TOP)}">'
        f"<title>{esc(s.label)}</title></rect>"
        for s in spans
    ]
    parts += _axes(x_of, y_ticks, int_ticks(len(values) - 1), x_label, y_of)
    path: list[str] = []
    dots: list[str] = []
    segment: list[tuple[float, float]] = []
    for point in [*_line_points(values), None]:
        if point is not None:
            segment.append(point)
            continue
        if len(segment) == 1:
            dots.append(f'<circle cx="{num(x_of(segment[0][0]))}" cy="{num(y_of(segment[0][1]))}" r="1.8"/>')
        elif segment:
            coords = [f"{num(x_of(x))} {num(y_of(y))}" for x, y in segment]
            path.append(f"M{coords[0]}L{' '.join(coords[1:])}")
        segment = []
    parts.append(f'<path class="line" d="{"".join(path)}"/>')
    parts += [f'<g class="dots">{"".join(dots)}</g>'] if dots else []
    if len(values) <= MAX_LINE_POINTS:
        parts.append(_hover_columns(values, x_of, bottom, step_labels))
    parts += marker_marks(markers, x_of, TOP, bottom, lines=True)
    svg = (
        f'<svg class="line-chart" viewBox="0 0 {WIDTH} {height}" role="img" aria-label="{esc(title)}">'
        + "".join(parts)
        + "</svg>"
    )
    missing = len(values) - len(present)
    notes = [f"{missing} of {len(values)} steps have no value (gaps in the line)." if missing else ""]
    if len(values) > MAX_LINE_POINTS:
        notes.append("Long run: each block of steps is drawn as its minimum and maximum.")
    return figure(title, svg, notes, "chart")


def _hover_columns(
    values: Sequence[float | None], x_of: Plot, bottom: float, labels: Sequence[str] | None
) -> str:
    """One transparent column per step whose tooltip is the step's value."""
    half = (x_of(1) - x_of(0)) / 2
    columns = []
    for i, value in enumerate(values):
        label = f"{labels[i]} · " if labels is not None and i < len(labels) else ""
        columns.append(
            f'<rect x="{num(x_of(i) - half)}" y="{TOP}" width="{num(2 * half)}" height="{num(bottom - TOP)}">'
            f"<title>step {i} · {label}{fmt(value)}</title></rect>"
        )
    return f'<g class="hover">{"".join(columns)}</g>'


def bar_chart(
    values: Sequence[float | None],
    *,
    title: str,
    labels: Sequence[str] | None = None,
    palette: Palette | None = None,
    x_label: str,
    first: int = 0,
    height: int = 170,
) -> str:
    """Bars at positions ``first``, ``first + 1``, … (coloured by value with ``palette``).

    ``labels`` are the bars' hover texts. More than :data:`MAX_BARS` values are drawn as block means.
    """
    present = [v for v in values if v is not None]
    if not present:
        return empty_figure(title, "No values were recorded.")
    block = max(math.ceil(len(values) / MAX_BARS), 1)
    if block > 1:
        values = [block_mean(values[i : i + block]) for i in range(0, len(values), block)]
        labels = None
    lo = min(0.0, min(present))
    y_ticks = nice_ticks(lo, max(present) if max(present) > lo else lo + 1)
    bottom = height - BOTTOM
    y_of = Plot(y_ticks[0], y_ticks[-1], bottom, TOP)
    n = len(values)
    x_of = Plot(first - 0.5, first + n * block - 0.5, LEFT, WIDTH - RIGHT)  # integer positions at bar centres
    last = first + n * block - 1
    parts = _axes(x_of, y_ticks, [t for t in int_ticks(last) if t >= first], x_label, y_of)
    colours = Plot(min(present), max(present), 0.0, 1.0)
    for i, value in enumerate(values):
        if value is None:
            continue
        left, right = x_of(first + i * block - 0.5), x_of(first + (i + 1) * block - 0.5)
        gap = (right - left) * 0.075
        y0, y1 = y_of(max(value, 0.0)), y_of(min(value, 0.0))
        fill = palette.colour(colours(value)) if palette else _BAR
        label = labels[i] if labels is not None else f"{first + i * block}: {fmt(value)}"
        parts.append(
            f'<rect class="bar" x="{num(left + gap)}" y="{num(y0)}"'
            f' width="{num(max(right - left - 2 * gap, 0.6))}" height="{num(max(y1 - y0, 0.5))}"'
            f' fill="{fill}"><title>{label}</title></rect>'
        )
    svg = (
        f'<svg class="bar-chart" viewBox="0 0 {WIDTH} {height}" role="img" aria-label="{esc(title)}">'
        + "".join(parts)
        + "</svg>"
    )
    note = f"{n} bars, each the mean of {block} consecutive positions." if block > 1 else ""
    return figure(title, svg, [note], "chart")


def block_mean(values: Sequence[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return sum(present) / len(present) if present else None
