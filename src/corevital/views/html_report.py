"""``corevital report --html``: one stored run as a single self-contained HTML file.

The file holds everything it shows: inline CSS and inline SVG charts drawn here in Python, no
script, no font, no image or style from anywhere else. Its Content-Security-Policy
(``default-src 'none'``) forbids every fetch and every script, so the page makes no network request
and a string that slipped through escaping still could not run. Every string that comes from a
model, a prompt or a report file goes through :func:`~corevital.views.html_text.esc`.

Sections: header (model, time, trace id, tokens, finish reason, capture mode), risk with its
factors, narrative, health flags, compound signals, early warnings, blamed layers, step metric
charts, the output coloured by surprisal, layer × step heat maps (full capture), the prompt and
its telemetry, other findings. Works on every readable report, including the original
CoreVital's 0.3.0/0.4.0 traces, where fields may be missing.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from corevital import __version__
from corevital.analysis.narrative import HIGH_RISK, MODERATE_RISK
from corevital.report.schema import Report
from corevital.views.html_charts import MARK
from corevital.views.html_steps import (
    firings,
    has_layer_data,
    heat_maps,
    metric_charts,
    prompt_section,
    token_css,
    tokens_view,
)
from corevital.views.html_text import esc, fmt
from corevital.views.lenient import finite

__all__ = ["CONTENT_SECURITY_POLICY", "render_html"]

CONTENT_SECURITY_POLICY = (
    "default-src 'none'; style-src 'unsafe-inline'; img-src data:; base-uri 'none'; form-action 'none'"
)
"""No script, no fetch: only the inline styles and ``data:`` images of the file itself."""

_RISK_BANDS = (
    (0.0, MODERATE_RISK, "low", "#009e73"),
    (MODERATE_RISK, HIGH_RISK, "moderate", "#e69f00"),
    (HIGH_RISK, 1.0, "high", MARK),
)  # Okabe–Ito green, orange, vermillion; the band is also written out in words

_CSS = """
*{box-sizing:border-box}
body{margin:0;font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"Helvetica Neue",Arial,sans-serif;
color:#1b1b1b;background:#f6f6f4}
main{max-width:1040px;margin:0 auto;padding:16px 20px 40px}
header{background:#1f2a37;color:#f3f3f3;padding:16px 20px}
header .inner{max-width:1040px;margin:0 auto}
header h1{margin:0 0 6px;font-size:20px}
header dl{display:grid;grid-template-columns:repeat(auto-fill,minmax(230px,1fr));gap:2px 18px;margin:0}
header dt{font-size:11px;text-transform:uppercase;letter-spacing:.04em;color:#aab4c0}
header dd{margin:0 0 6px;overflow-wrap:anywhere}
nav{font-size:13px;margin:10px 0 0}
nav a{color:#cfe3ff;margin-right:12px}
section{background:#fff;border:1px solid #e1e1dc;border-radius:6px;padding:12px 16px;margin:14px 0}
h2{font-size:16px;margin:0 0 8px}
.pair{display:grid;grid-template-columns:repeat(auto-fit,minmax(380px,1fr));gap:0 14px;align-items:start}
.note,.meta{color:#555;font-size:12.5px;margin:4px 0}
.narrative{white-space:pre-line}
table{border-collapse:collapse;font-size:13px}
td,th{border-bottom:1px solid #eee;padding:3px 10px 3px 0;text-align:left;vertical-align:top}
code,pre{font-family:ui-monospace,"SFMono-Regular",Menlo,Consolas,monospace;font-size:12.5px}
pre.text{white-space:pre-wrap;overflow-wrap:anywhere;background:#fafafa;border:1px solid #eee;
padding:8px;margin:6px 0}
.risk{display:flex;align-items:center;gap:18px;flex-wrap:wrap}
.risk .score{font-size:28px;font-weight:700}
.risk .band{font-weight:600}
.flag-on{color:#b3400a;font-weight:600}
.pill{display:inline-block;border-radius:10px;padding:0 8px;margin:2px 4px 2px 0;background:#eef1f4;
font-size:12.5px}
.charts{display:grid;grid-template-columns:1fr;gap:4px}
figure{margin:6px 0 10px}
figcaption{font-weight:600;font-size:13px;margin-bottom:2px}
svg{width:100%;height:auto;display:block}
svg text{font-family:inherit}
svg .tick{font-size:11px;fill:#444}
svg .tick.blamed{fill:#d55e00;font-weight:700}
svg .axis-label{font-size:11px;fill:#666}
svg .grid{stroke:#ececec;stroke-width:1}
svg .axis{stroke:#888;stroke-width:1}
svg .line{fill:none;stroke:#1f5fa8;stroke-width:1.6;stroke-linejoin:round}
svg .dots{fill:#1f5fa8}
svg .marker{stroke:#d55e00;stroke-width:1.2;stroke-dasharray:4 3}
svg .marker-head{fill:#d55e00}
svg .span{fill:#e8e0f3}
svg .row{fill:transparent}
svg .hover rect{fill:transparent}
svg .hover rect:hover{fill:rgba(31,95,168,.12)}
svg .row:hover{fill:rgba(255,255,255,.22)}
.marker-key{list-style:none;padding:0;margin:0 0 6px;font-size:12.5px;color:#7a3a10;display:flex;
flex-wrap:wrap;gap:2px 16px}
.swatch.span{display:inline-block;width:12px;height:10px;background:#e8e0f3;border:1px solid #c9bde0}
.tokens{font-family:ui-monospace,"SFMono-Regular",Menlo,Consolas,monospace;font-size:13px;line-height:1.9;
white-space:pre-wrap;overflow-wrap:anywhere;border:1px solid #eee;padding:8px;background:#fff}
.tok{padding:1px 0;border-right:1px solid rgba(255,255,255,.75)}
.token-legend{display:flex;align-items:center;gap:22px;font-size:12px;margin:4px 0 8px}
.token-legend .bar{position:relative;display:inline-block;width:240px;height:26px}
.token-legend .cells{display:flex;height:10px}
.token-legend .cells span{flex:1}
.token-legend .labels span{position:absolute;top:12px;transform:translateX(-50%);color:#444}
footer{color:#666;font-size:12px;text-align:center;margin:20px 0}
"""


def render_html(report: Report) -> str:
    """The whole HTML document of ``report`` (UTF-8 text; write it as is)."""
    sections = [
        _section("risk", "Risk", _risk(report)),
        _section("narrative", "Narrative", _narrative(report)),
        _pair(
            _section("flags", "Health flags", _flags(report)),
            _section("warnings", "Early warnings", _early_warning(report)),
        ),
        _pair(
            _section("compound", "Compound signals", _compound(report)),
            _section("blame", "Blamed layers", _blame(report)),
        ),
        _section("steps", "Step metrics", metric_charts(report)),
        _section("output", "Output, each token coloured by surprisal", tokens_view(report)),
        _section("layers", "Layers × steps", heat_maps(report)),
        _section("prompt", "Prompt", prompt_section(report)),
        _section("other", "Other findings", _other(report)),
    ]
    title = f"CoreVital report {report.trace_id[:8]} · {report.model.hf_id}"
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="Content-Security-Policy" content="{CONTENT_SECURITY_POLICY}">'
        '<meta name="viewport" content="width=device-width,initial-scale=1">'
        '<meta name="referrer" content="no-referrer">'
        f"<title>{esc(title)}</title><style>{_CSS}{token_css()}</style></head><body>"
        f"{_header(report)}<main>{''.join(sections)}</main>"
        f"<footer>Written by CoreVital {esc(__version__)} · report schema {esc(report.schema_version)}"
        " · self-contained: this file loads nothing from the network.</footer></body></html>\n"
    )


def _pair(left: str, right: str) -> str:
    return f'<div class="pair">{left}{right}</div>'


def _section(anchor: str, title: str, body: str) -> str:
    return f'<section id="{anchor}"><h2>{esc(title)}</h2>{body}</section>'


def _header(report: Report) -> str:
    run, generated, summary = report.run_config, report.generated, report.summary
    mode = run.capture_mode or ("full" if has_layer_data(report) else "not recorded")
    decoding = (
        "greedy"
        if not run.generation.do_sample
        else f"sampling (temperature {fmt(run.generation.temperature)})"
    )
    if (run.generation.num_beams or 1) > 1:
        decoding = f"beam search ({run.generation.num_beams} beams)"
    schema = report.schema_version + (
        f" (read from {report.extensions.migrated_from})" if report.extensions.migrated_from else ""
    )
    fields = [
        ("Model", report.model.hf_id),
        ("Architecture", f"{report.model.architecture} · {report.model.num_layers} layers"),
        ("Created (UTC)", report.created_at_utc),
        ("Trace id", report.trace_id),
        ("Tokens", f"{summary.prompt_tokens} prompt + {summary.generated_tokens} generated"),
        ("Finish reason", generated.finish_reason or "not recorded"),
        ("Capture mode", mode),
        ("Decoding", f"{decoding}, seed {run.seed}"),
        ("Device", f"{report.model.device} · {report.model.dtype or 'dtype not recorded'}"),
        ("Elapsed", f"{summary.elapsed_ms} ms"),
        ("Schema", schema),
    ]
    items = "".join(f"<div><dt>{esc(k)}</dt><dd>{esc(v)}</dd></div>" for k, v in fields)
    links = "".join(
        f'<a href="#{anchor}">{label}</a>'
        for anchor, label in (
            ("risk", "Risk"),
            ("warnings", "Warnings"),
            ("blame", "Blame"),
            ("steps", "Steps"),
            ("output", "Output"),
            ("layers", "Layers"),
            ("prompt", "Prompt"),
        )
    )
    return (
        f'<header><div class="inner"><h1>CoreVital report</h1><dl>{items}</dl>'
        f"<nav>{links}</nav></div></header>"
    )


def _risk(report: Report) -> str:
    risk = report.extensions.risk
    score = finite(risk.risk_score) if risk is not None else None
    if risk is None or score is None:
        return '<p class="note">This report has no risk score.</p>'
    band, colour = next(((name, c) for lo, hi, name, c in _RISK_BANDS if score < hi), ("high", MARK))
    pad, width = 8, 300  # room for the marker at either end
    bar = "".join(
        f'<rect x="{pad + lo * width:.1f}" y="6" width="{(hi - lo) * width:.1f}" height="12" fill="{c}"'
        f' opacity=".85"><title>{name} risk: {fmt(lo, 2)}–{fmt(hi, 2)}</title></rect>'
        for lo, hi, name, c in _RISK_BANDS
    )
    x = pad + min(max(score, 0.0), 1.0) * width
    marker = (
        f'<path d="M{x:.1f} 22l-6 9h12z" fill="#1b1b1b"/>'
        f'<line x1="{x:.1f}" x2="{x:.1f}" y1="2" y2="22" stroke="#1b1b1b" stroke-width="2"/>'
    )
    band_svg = (
        f'<svg class="risk-band" viewBox="0 0 {width + 2 * pad} 34" style="width:{width + 2 * pad}px"'
        f' role="img" aria-label="risk {score:.2f} on a 0 to 1 scale">{bar}{marker}</svg>'
    )
    factors = _factors(risk.factor_contributions, risk.risk_factors)
    source = f'<p class="meta">Scored by the {esc(risk.model)} risk model.</p>' if risk.model else ""
    return (
        f'<div class="risk"><span class="score" style="color:{colour}">{score:.2f}</span>'
        f'<span class="band">{band.capitalize()} risk</span>{band_svg}</div>{factors}{source}'
    )


def _factors(contributions: Iterable[Any] | None, names: list[str]) -> str:
    rows = [f"<tr><td>{esc(c.name)}</td><td>{fmt(c.contribution)}</td></tr>" for c in contributions or []]
    if rows:
        return f"<table><tr><th>Factor</th><th>Contribution</th></tr>{''.join(rows)}</table>"
    if names:
        return "<p>Factors: " + "".join(f'<span class="pill">{esc(n)}</span>' for n in names) + "</p>"
    return '<p class="note">No risk factor fired.</p>'


def _narrative(report: Report) -> str:
    narrative = report.extensions.narrative
    if narrative is None or not narrative.summary:
        return '<p class="note">This report has no narrative.</p>'
    text = esc(narrative.summary, keep="\n")  # its sentences may stand on lines of their own
    return f'<p class="narrative">{text}</p>'


def _flags(report: Report) -> str:
    flags = report.health_flags
    if flags is None:
        return '<p class="note">This report has no health flags.</p>'
    rows = []
    for name, value in flags.model_dump().items():
        on = value is True or (isinstance(value, int | float) and not isinstance(value, bool) and value > 0)
        shown = "yes" if value is True else "no" if value is False else fmt(value)
        css = ' class="flag-on"' if on else ""
        rows.append(f"<tr><td>{esc(name.replace('_', ' '))}</td><td{css}>{esc(shown)}</td></tr>")
    return f"<table>{''.join(rows)}</table>"


def _compound(report: Report) -> str:
    signals = report.extensions.compound_signals
    if not signals:
        return (
            '<p class="note">No compound signal fired.</p>'
            if signals is not None
            else ('<p class="note">This report has no compound-signal analysis.</p>')
        )
    rows = []
    for signal in signals:
        evidence = "".join(f"<li>{esc(e)}</li>" for e in signal.evidence)
        rows.append(
            f"<tr><td><b>{esc(signal.name)}</b></td><td>{fmt(signal.severity, 2)}</td>"
            f"<td>{esc(signal.description)}<ul>{evidence}</ul></td></tr>"
        )
    return f"<table><tr><th>Signal</th><th>Severity</th><th>What it means</th></tr>{''.join(rows)}</table>"


def _early_warning(report: Report) -> str:
    warning = report.extensions.early_warning
    if warning is None:
        return '<p class="note">This report has no early-warning analysis.</p>'
    first_step = dict(reversed(firings(report)))
    peak = warning.peak_step
    rows = "".join(
        f"<tr><td>{esc(name)}</td><td>{esc(first_step.get(name, '–'))}</td></tr>"
        for name in warning.warning_signals
    )
    table = (
        f"<table><tr><th>Signal</th><th>First fired at step</th></tr>{rows}</table>"
        if rows
        else '<p class="note">No early-warning signal fired.</p>'
    )
    peak_text = f" (reached at step {esc(peak)})" if peak is not None else ""
    return (
        f"<p>Failure risk <b>{fmt(warning.failure_risk, 2)}</b>{peak_text}."
        " Firings are marked ▼ on the charts.</p>" + table
    )


def _blame(report: Report) -> str:
    risk = report.extensions.risk
    if risk is None:
        return '<p class="note">This report has no layer blame.</p>'
    blamed = sorted(risk.blamed_layers, key=lambda b: (-(finite(b.severity) or 0.0), b.layer))
    if not blamed and risk.blamed_layers_flat:
        return "<p>Layers: " + ", ".join(str(i) for i in risk.blamed_layers_flat) + "</p>"
    if not blamed:
        return '<p class="note">No layer was blamed.</p>'
    with_step = any(b.first_step is not None for b in blamed)
    rows = "".join(
        f"<tr><td>{b.layer}</td><td>{fmt(b.severity, 2)}</td>"
        + (f"<td>{esc(_or_dash(b.first_step))}</td>" if with_step else "")
        + f"<td>{'; '.join(esc(r) for r in b.reasons) or '–'}</td></tr>"
        for b in blamed
    )
    step_head = "<th>From step</th>" if with_step else ""
    return (
        f"<table><tr><th>Layer</th><th>Severity</th>{step_head}<th>Reasons</th></tr>{rows}</table>"
        '<p class="note">Blamed layers are marked ◀ beside the heat maps.</p>'
    )


def _or_dash(value: object) -> object:
    return "–" if value is None else value


def _other(report: Report) -> str:
    items: list[str] = [f"<li><b>{esc(w.code)}</b>: {esc(w.message)}</li>" for w in report.warnings]
    ext = report.extensions
    if ext.repetition is not None and ext.repetition.detected:
        r = ext.repetition
        items.append(
            f"<li>Repetition loop from step {esc(r.first_step)} (period {esc(r.period)}, span {esc(r.span)}):"
            f" <code>{esc(r.repeated_text or '')}</code></li>"
        )
    if ext.calibration is not None:
        c = ext.calibration
        items.append(
            f"<li>Calibration divergence {fmt(c.divergence_score, 2)}"
            f" against {esc(c.baseline_model_id or 'a profile')}</li>"
        )
        items += [f"<li>{esc(a)}</li>" for a in c.anomalies[:20]]
    if ext.metric_consistency is not None and ext.metric_consistency.violations:
        items.append(f"<li>{len(ext.metric_consistency.violations)} metric consistency violations</li>")
    if ext.rag is not None and ext.rag.context_token_count is not None:
        items.append(f"<li>RAG context: {esc(ext.rag.context_token_count)} tokens</li>")
    return f"<ul>{''.join(items)}</ul>" if items else '<p class="note">Nothing else to report.</p>'
