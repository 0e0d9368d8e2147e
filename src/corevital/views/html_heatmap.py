"""Layer × step heat maps of the HTML report, as inline SVG.

Cells of one colour level are one SVG path (a row's run of equal cells is one rectangle), in a
nested SVG whose user unit is one cell, so a 30-layer × 400-column map stays small. Runs longer
than ``max_columns`` steps are drawn with each column the mean of a block of consecutive steps;
the figure says so. Cells without a value are grey, never the colour of zero.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from corevital.views.html_charts import (
    CIVIDIS,
    LEFT,
    LEVELS,
    MARK,
    MISSING,
    RIGHT,
    WIDTH,
    Marker,
    Palette,
    Plot,
    block_mean,
    empty_figure,
    figure,
    int_ticks,
    marker_marks,
    nice_ticks,
    num,
    tick_labels,
    x_tick,
)
from corevital.views.html_text import esc, fmt


@dataclass(frozen=True)
class HeatMap:
    """A layer × step matrix to draw: ``rows[layer][step]``, ``None`` where there is no value."""

    title: str
    rows: Sequence[Sequence[float | None]]
    unit: str
    palette: Palette = CIVIDIS
    log: bool = False
    domain: tuple[float, float] | None = None


def block_columns(
    rows: Sequence[Sequence[float | None]], max_columns: int
) -> tuple[list[list[float | None]], int]:
    """Rows with each block of ``k`` consecutive columns replaced by its mean; returns (rows, k)."""
    width = max((len(row) for row in rows), default=0)
    block = max(math.ceil(width / max_columns), 1)
    if block == 1:
        return [list(row) for row in rows], 1
    return [[block_mean(row[i : i + block]) for i in range(0, width, block)] for row in rows], block


def _legend(palette: Palette, lo: float, hi: float, log: bool, x: float, y: float, extra: str) -> str:
    width, height = 220.0, 10.0
    cells = "".join(
        f'<rect x="{num(x + i * width / LEVELS)}" y="{num(y)}" width="{num(width / LEVELS + 0.3)}"'
        f' height="{height}" fill="{colour}"/>'
        for i, colour in enumerate(palette.levels())
    )
    scale = Plot(lo, hi, x, x + width)
    ticks = [t for t in nice_ticks(lo, hi, 4) if lo - 1e-9 <= t <= hi + 1e-9] or [lo, hi]
    decades = [float(e) for e in range(math.ceil(lo - 1e-9), math.floor(hi + 1e-9) + 1)]
    if log and len(decades) >= 2:
        ticks = decades[:: math.ceil(len(decades) / 6)]
    texts = [fmt(10**t) for t in ticks] if log else tick_labels(ticks)
    labels = "".join(
        f'<text class="tick" x="{num(scale(t))}" y="{num(y + height + 12)}" text-anchor="middle">'
        f"{text}</text>"
        for t, text in zip(ticks, texts, strict=True)
    )
    missing = (
        f'<rect x="{num(x + width + 16)}" y="{num(y)}" width="10" height="{height}" fill="{MISSING}"/>'
        f'<text class="tick" x="{num(x + width + 30)}" y="{num(y + 9)}">no value</text>'
    )
    return f'<g class="legend">{cells}{labels}{missing}{extra}</g>'


def heat_map(
    spec: HeatMap,
    *,
    blamed: frozenset[int] = frozenset(),
    markers: Sequence[Marker] = (),
    max_columns: int = 400,
) -> str:
    """Rows are layers (layer 0 at the top), columns steps; each column at most ``max_columns`` wide."""
    raw = [[_log10(v) if spec.log else v for v in row] for row in spec.rows]
    matrix, block = block_columns(raw, max_columns)
    present = [v for row in matrix for v in row if v is not None]
    if not present:
        return empty_figure(spec.title, "No values were recorded for this metric.")
    lo, hi = spec.domain if spec.domain is not None else (min(present), max(present))
    if hi - lo < 1e-12:
        lo, hi = lo - 0.5, hi + 0.5
    n_rows, n_cols = len(matrix), max(len(row) for row in matrix)
    steps = max((len(row) for row in spec.rows), default=0)
    row_h = max(3.0, min(12.0, 360.0 / n_rows))
    plot_h = row_h * n_rows
    top, plot_w = 22.0, WIDTH - LEFT - RIGHT
    height = top + plot_h + 64
    cells = _cell_paths(matrix, lo, hi, spec.palette)
    hover = "".join(
        f'<rect class="row" x="0" y="{r}" width="{n_cols}" height="1"><title>layer {r}: {_row_summary(row)}'
        f"</title></rect>"
        for r, row in enumerate(spec.rows)
    )
    inner = (
        f'<svg class="cells" x="{LEFT}" y="{num(top)}" width="{plot_w}" height="{num(plot_h)}"'
        f' viewBox="0 0 {n_cols} {n_rows}" preserveAspectRatio="none" shape-rendering="crispEdges"'
        f' data-cells="{n_rows * n_cols}">{cells}{hover}</svg>'
    )
    x_of = Plot(0, n_cols * block, LEFT, WIDTH - RIGHT)
    parts = [inner, *_row_labels(n_rows, row_h, top, blamed)]
    bottom = top + plot_h
    for step in int_ticks(steps - 1):
        parts.extend(x_tick(x_of(step + 0.5 * block), bottom, step))
    parts.append(
        f'<text class="axis-label" x="{WIDTH - RIGHT}" y="{num(bottom + 27)}" text-anchor="end">'
        "generated step</text>"
    )
    parts += marker_marks(markers, x_of, top, bottom, lines=False)
    blamed_key = (
        f'<path d="M{num(LEFT + 337)} {num(bottom + 38)}l-7 5l7 5z" fill="{MARK}"/>'
        f'<text class="tick" x="{num(LEFT + 341)} " y="{num(bottom + 47)}">blamed layer</text>'
        if blamed
        else ""
    )
    unit = f"{spec.unit}, log scale" if spec.log else spec.unit
    parts.append(_legend(spec.palette, lo, hi, spec.log, LEFT, bottom + 38, blamed_key))
    svg = (
        f'<svg class="heatmap" viewBox="0 0 {WIDTH} {num(height)}" role="img" aria-label="{esc(spec.title)}">'
        + "".join(parts)
        + "</svg>"
    )
    notes = [f"Colour: {esc(unit)} ({spec.palette.name}); hover a row for the layer's range."]
    if block > 1:
        notes.append(
            f"{steps} steps drawn as {n_cols} columns: each column is the mean of {block} consecutive "
            "steps (missing values left out)."
        )
    return figure(spec.title, svg, notes, "chart heat")


def _log10(value: float | None) -> float | None:
    return math.log10(value) if value is not None and value > 0 else None


def _row_summary(row: Sequence[float | None]) -> str:
    present = [v for v in row if v is not None]
    if not present:
        return "no values"
    return f"min {fmt(min(present))}, mean {fmt(sum(present) / len(present))}, max {fmt(max(present))}"


def _row_labels(n_rows: int, row_h: float, top: float, blamed: frozenset[int]) -> list[str]:
    stride = next(s for s in (1, 2, 5, 10, 20, 50, 100, 1000) if s * row_h >= 10.5)
    parts = []
    for r in range(n_rows):
        y = top + (r + 0.5) * row_h
        if r in blamed:
            parts.append(f'<path d="M{WIDTH - RIGHT + 3} {num(y)}l7 -4v8z" fill="{MARK}"/>')
        if r % stride == 0 or (r in blamed and row_h >= 10.5):
            css = "tick blamed" if r in blamed else "tick"
            parts.append(
                f'<text class="{css}" x="{LEFT - 5}" y="{num(y + 3.5)}" text-anchor="end">{r}</text>'
            )
    parts.append(f'<text class="axis-label" x="{LEFT - 5}" y="{num(top - 8)}" text-anchor="end">layer</text>')
    return parts


def _cell_paths(matrix: Sequence[Sequence[float | None]], lo: float, hi: float, palette: Palette) -> str:
    """One path per colour level; consecutive cells of a row with the same level are one rectangle."""
    by_level: dict[int, list[str]] = {}
    scale = (LEVELS - 1e-9) / (hi - lo)
    for r, row in enumerate(matrix):
        c = 0
        while c < len(row):
            level = _level(row[c], lo, scale)
            end = c + 1
            while end < len(row) and _level(row[end], lo, scale) == level:
                end += 1
            by_level.setdefault(level, []).append(f"M{c} {r}h{end - c}v1h-{end - c}z")
            c = end
    colours = palette.levels()
    return "".join(
        f'<path fill="{MISSING if level < 0 else colours[level]}" d="{"".join(rects)}"/>'
        for level, rects in sorted(by_level.items())
    )


def _level(value: float | None, lo: float, scale: float) -> int:
    if value is None:
        return -1
    return min(max(int((value - lo) * scale), 0), LEVELS - 1)
