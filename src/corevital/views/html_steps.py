"""The step and layer sections of the HTML report: metric charts, tokens by surprisal, heat maps, prompt.

Every reader here tolerates what a report may lack (reports of the original CoreVital, summary
capture, a run stopped before its first token): a missing value is ``None`` and is shown as missing.
Steps are 0-based generated-token indices, as in the analysis outputs.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from corevital.modes import DEFAULT_TOPK_MASS_K
from corevital.report.schema import AttentionSummary, LayerSummary, LogitsSummary, Report, TimelineStep
from corevital.views.html_charts import (
    CIVIDIS,
    VIRIDIS,
    Marker,
    Span,
    bar_chart,
    line_chart,
    nice_ticks,
    text_colour,
)
from corevital.views.html_heatmap import HeatMap, heat_map
from corevital.views.html_text import esc, fmt, quoted, token_label
from corevital.views.lenient import finite

TOKEN_LEVELS = 24
"""Surprisal colour classes of the token view."""

MAX_LAYERS = 4096
"""Layer indices beyond this (a malformed report) are left out of the heat maps."""

_LINES = "\n\t"  # kept as they are in shown text


def firings(report: Report) -> list[tuple[str, int]]:
    """(signal, step) of each early-warning signal's first firing, where the report has them."""
    warning = report.extensions.early_warning
    if warning is None or warning.firings is None:
        return []
    return [(firing.signal, firing.step) for firing in warning.firings]


def step_markers(report: Report) -> list[Marker]:
    """Early-warning firings and compound-signal onsets, as steps to mark on the charts."""
    markers = [Marker(step, f"early warning: {signal}") for signal, step in firings(report)]
    for signal in report.extensions.compound_signals or []:
        if signal.first_step is not None:
            markers.append(Marker(signal.first_step, f"compound signal: {signal.name}"))
    n = len(report.timeline)
    return [m for m in markers if 0 <= m.step < max(n, 1)]


def step_spans(report: Report) -> list[Span]:
    repetition = report.extensions.repetition
    if repetition is None or not repetition.detected or repetition.first_step is None:
        return []
    end = repetition.first_step + (repetition.span or 1)
    return [Span(repetition.first_step, end, f"repetition loop: steps {repetition.first_step}–{end - 1}")]


def _logits(getter: Callable[[LogitsSummary], Any], steps: Sequence[TimelineStep]) -> list[float | None]:
    return [finite(getter(step.logits_summary)) for step in steps]


def metric_charts(report: Report) -> str:
    """Entropy, surprisal, top-k margin and top-k mass over the generated steps."""
    steps = report.timeline
    if not steps:
        return '<p class="note">The report has no generated steps.</p>'
    markers, spans = step_markers(report), step_spans(report)
    tokens = [quoted(step.token.token_text) for step in steps]
    mass_k = report.run_config.summaries.logits.mass_k or DEFAULT_TOPK_MASS_K
    series: tuple[tuple[Callable[[LogitsSummary], Any], str, tuple[float, float] | None], ...] = (
        (lambda s: s.entropy, "Entropy (bits)", None),
        (lambda s: s.surprisal, "Surprisal of the chosen token (bits)", None),
        (lambda s: s.top_k_margin, "Top-1 − top-2 probability margin", (0.0, 1.0)),
        (lambda s: s.topk_mass, f"Top-{mass_k} probability mass", (0.0, 1.0)),
    )
    charts = [
        line_chart(
            _logits(getter, steps),
            title=title,
            markers=markers,
            spans=spans,
            domain=domain,
            step_labels=tokens,
        )
        for getter, title, domain in series
    ]
    key = _marker_key(markers, spans)
    return key + '<div class="charts">' + "".join(charts) + "</div>"


def _marker_key(markers: Sequence[Marker], spans: Sequence[Span]) -> str:
    items = [f"<li>▼ step {m.step}: {esc(m.label)}</li>" for m in sorted(markers, key=lambda m: m.step)]
    items += [f'<li><span class="swatch span"></span> {esc(s.label)}</li>' for s in spans]
    return f'<ul class="marker-key">{"".join(items)}</ul>' if items else ""


# --- tokens ---------------------------------------------------------------------------------


def token_css() -> str:
    """The colour classes of the token view (``s0`` low surprisal … ``sN`` high; ``sx`` missing)."""
    rules = [
        f".s{i}{{background:{colour};color:{text_colour(colour)}}}"
        for i, colour in enumerate(VIRIDIS.levels(TOKEN_LEVELS))
    ]
    return "".join(rules) + ".sx{background:#fff;color:#333;outline:1px dashed #999}"


def _token_title(t: int, step: TimelineStep) -> str:
    logits = step.logits_summary
    lines = [
        f"step {t} · token {step.token.token_id} {quoted(step.token.token_text)}",
        f"surprisal {fmt(logits.surprisal)} bits · entropy {fmt(logits.entropy)} bits",
    ]
    if finite(logits.top_k_margin) is not None:
        lines.append(f"top-1 margin {fmt(logits.top_k_margin)}")
    alternatives = [
        f"{quoted(alt.token_text)} {fmt((finite(alt.prob) or 0.0) * 100, 2)}%"
        for alt in logits.topk_probs[:5]
        if finite(alt.prob) is not None
    ]
    if alternatives:
        lines.append("top: " + ", ".join(alternatives))
    return "&#10;".join(lines)


def tokens_view(report: Report) -> str:
    """The generated text, each token coloured by its surprisal, with a legend."""
    steps = report.timeline
    if not steps:
        text = report.generated.output_text
        return (
            f'<pre class="text">{esc(text, keep=_LINES)}</pre>' if text else '<p class="note">No output.</p>'
        )
    surprisals = [finite(step.logits_summary.surprisal) for step in steps]
    present = [s for s in surprisals if s is not None]
    top = nice_ticks(0.0, max(max(present, default=1.0), 1.0), 4)[-1]
    spans = []
    for t, (step, surprisal) in enumerate(zip(steps, surprisals, strict=True)):
        level = (
            "x"
            if surprisal is None
            else str(min(max(int(surprisal / top * TOKEN_LEVELS), 0), TOKEN_LEVELS - 1))
        )
        label = token_label(step.token.token_text) or "&#8203;"
        spans.append(f'<span class="tok s{level}" title="{_token_title(t, step)}">{label}</span>')
    legend = _token_legend(top)
    return f'{legend}<div class="tokens">{"".join(spans)}</div>'


def _token_legend(top: float) -> str:
    colours = VIRIDIS.levels(TOKEN_LEVELS)
    cells = "".join(f'<span style="background:{c}"></span>' for c in colours)
    ticks = nice_ticks(0.0, top, 4)
    labels = "".join(
        f'<span style="left:{t / top * 100:.1f}%">{fmt(t)}</span>' for t in ticks if t <= top + 1e-9
    )
    return (
        '<div class="token-legend"><span class="legend-title">surprisal (bits), viridis:</span>'
        f'<span class="bar"><span class="cells">{cells}</span><span class="labels">{labels}</span></span>'
        '<span class="tok sx">missing</span></div>'
    )


# --- layers ---------------------------------------------------------------------------------


def _layer_rows(report: Report, getter: Callable[[LayerSummary], float | None]) -> list[list[float | None]]:
    steps = report.timeline
    indices = {layer.layer_index for step in steps for layer in step.layers}
    # A report's layers are 0..L-1 (L = model.num_layers): an index beyond is malformed and left out.
    limit = min(report.model.num_layers if report.model.num_layers > 0 else len(indices), MAX_LAYERS)
    n_layers = min(max(indices, default=-1) + 1, limit)
    rows: list[list[float | None]] = [[None] * len(steps) for _ in range(n_layers)]
    for t, step in enumerate(steps):
        for layer in step.layers:
            if 0 <= layer.layer_index < n_layers:
                rows[layer.layer_index][t] = finite(getter(layer))
    return rows


def _collapse_rate(heads: int | None) -> Callable[[LayerSummary], float | None]:
    def rate(layer: LayerSummary) -> float | None:
        summary = layer.attention_summary
        if summary.collapsed_head_rate is not None:
            return summary.collapsed_head_rate
        if summary.collapsed_head_count is not None and heads:
            return summary.collapsed_head_count / heads
        return None

    return rate


def _entropy_map(
    report: Report, title: str, which: Callable[[LayerSummary], AttentionSummary | None]
) -> HeatMap:
    def normalized(layer: LayerSummary) -> float | None:
        summary = which(layer)
        return summary.entropy_mean_normalized if summary is not None else None

    rows = _layer_rows(report, normalized)
    if any(v is not None for row in rows for v in row):
        return HeatMap(title, rows, "entropy / ln(keys), 0–1", domain=(0.0, 1.0))

    def nats(layer: LayerSummary) -> float | None:
        summary = which(layer)
        return summary.entropy_mean if summary is not None else None

    return HeatMap(title, _layer_rows(report, nats), "entropy (nats)")


def has_layer_data(report: Report) -> bool:
    return any(step.layers for step in report.timeline)


def blamed_layers(report: Report) -> frozenset[int]:
    risk = report.extensions.risk
    if risk is None:
        return frozenset()
    return frozenset(b.layer for b in risk.blamed_layers) | frozenset(risk.blamed_layers_flat)


def heat_maps(report: Report) -> str:
    """Layer × step heat maps of full-capture reports; a sentence saying why there are none otherwise."""
    if not has_layer_data(report):
        mode = report.run_config.capture_mode
        why = (
            f"This report was captured in {esc(mode)} mode"
            if mode and mode != "full"
            else "This report holds no per-layer data"
        )
        return (
            f'<p class="note">{why}: the timeline has no per-layer data, so there are no layer × step '
            "heat maps. Run with <code>--capture full</code> to record them.</p>"
        )
    blamed, markers = blamed_layers(report), step_markers(report)
    maps = [
        _entropy_map(report, "Attention entropy (mean over heads)", lambda layer: layer.attention_summary),
        HeatMap(
            "Hidden-state L2 norm",
            _layer_rows(report, lambda layer: layer.hidden_summary.l2_norm_mean),
            "L2 norm",
            palette=VIRIDIS,
            log=True,
        ),
        HeatMap(
            "Collapsed-head rate",
            _layer_rows(report, _collapse_rate(report.model.num_attention_heads)),
            "share of heads collapsed, 0–1",
            domain=(0.0, 1.0),
        ),
    ]
    if any(layer.cross_attention is not None for step in report.timeline for layer in step.layers):
        maps.append(
            _entropy_map(
                report, "Cross-attention entropy (decoder → encoder)", lambda layer: layer.cross_attention
            )
        )
    return "".join(heat_map(spec, blamed=blamed, markers=markers) for spec in maps)


# --- prompt ---------------------------------------------------------------------------------


def prompt_section(report: Report) -> str:
    """The prompt text, its tokens' surprisals and the layer transformations (prompt telemetry)."""
    prompt = report.prompt
    text = esc(prompt.text, keep=_LINES)
    parts = [f'<p class="meta">{prompt.num_tokens} tokens</p><pre class="text">{text}</pre>']
    analysis = report.prompt_analysis
    if analysis is None:
        parts.append('<p class="note">No prompt telemetry in this report.</p>')
        return "".join(parts)
    parts.append(_prompt_surprisals(prompt.token_ids, [finite(v) for v in analysis.prompt_surprisals]))
    parts.append(
        _transformations([finite(v) for v in analysis.layer_transformations], report.model.num_layers)
    )
    return "".join(parts)


def _prompt_surprisals(ids: Sequence[int], surprisals: list[float | None]) -> str:
    if not surprisals:
        return '<p class="note">The prompt telemetry holds no prompt-token surprisals.</p>'
    labels = [
        f"position {i + 1}"
        + (f" · token id {ids[i + 1]}" if i + 1 < len(ids) else "")
        + f" · {fmt(value)} bits"
        for i, value in enumerate(surprisals)
    ]
    return bar_chart(
        surprisals,
        title="Prompt tokens by surprisal (bits, each given the tokens before it)",
        labels=labels,
        palette=VIRIDIS,
        x_label="prompt position",
        first=1,
    )


def _transformations(values: list[float | None], num_layers: int) -> str:
    if not values:
        return '<p class="note">The prompt telemetry holds no layer transformations.</p>'
    labels = [
        f"{label}: {fmt(v)}"
        for label, v in zip(_transition_labels(len(values), num_layers), values, strict=True)
    ]
    return bar_chart(
        values,
        title="Layer transformations over the prompt (1 − cosine similarity of consecutive layers)",
        labels=labels,
        palette=CIVIDIS,
        x_label="layer transition",
    )


def _transition_labels(count: int, num_layers: int) -> list[str]:
    """``embeddings → layer 0`` first when there is one value per layer, else ``layer i → i+1``."""
    if count == num_layers:
        return ["embeddings → layer 0"] + [f"layer {i - 1} → layer {i}" for i in range(1, count)]
    return [f"layer {i} → layer {i + 1}" for i in range(count)]
