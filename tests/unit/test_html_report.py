"""The HTML report: escaping, self-containment, missing data, summary capture, original traces."""

from __future__ import annotations

import re
from html.parser import HTMLParser
from pathlib import Path

import pytest

from corevital.report.encoding import load_report
from corevital.report.schema import (
    BlamedLayer,
    CompoundSignal,
    EarlyWarning,
    Narrative,
    Report,
    RiskExtension,
)
from corevital.views.html_charts import line_chart, nice_ticks, tick_labels
from corevital.views.html_heatmap import HeatMap, block_columns, heat_map
from corevital.views.html_report import render_html
from corevital.views.html_text import esc, fmt, show_controls

DATA = Path(__file__).resolve().parents[1] / "data"
ORIGINAL_TRACES = sorted((DATA / "original-corevital").glob("*.json"))
PAYLOAD = "<img src=x onerror=alert(1)></script><script>alert(2)</script>\x1b[31m\u202e"


class Elements(HTMLParser):
    """Collects every start tag and the text of the document."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data: str) -> None:
        self.text.append(data)

    def names(self) -> set[str]:
        return {tag for tag, _ in self.tags}


def parse(html: str) -> Elements:
    parser = Elements()
    parser.feed(html)
    parser.close()
    return parser


def golden() -> Report:
    return load_report(DATA / "golden_report_small.json")


def long_report(steps: int, layers: int = 4) -> Report:
    """The golden report stretched to ``steps`` steps of ``layers`` layers, with varied values."""
    report = golden()
    template = report.timeline[0]
    timeline = []
    for t in range(steps):
        step = template.model_copy(deep=True)
        step.step_index = report.summary.prompt_tokens + t
        step.logits_summary.entropy = 1.0 + (t % 7) * 0.3
        step.logits_summary.surprisal = (t % 11) * 0.8
        step.layers = [template.layers[0].model_copy(deep=True) for _ in range(layers)]
        for i, layer in enumerate(step.layers):
            layer.layer_index = i
            layer.hidden_summary.l2_norm_mean = 10.0 ** (i % 3) * (1 + t % 5)
            layer.attention_summary.entropy_mean_normalized = ((t + i) % 10) / 10
        timeline.append(step)
    report.timeline = timeline
    report.model.num_layers = layers
    report.summary.generated_tokens = steps
    return report


def test_model_and_prompt_strings_render_as_text_never_as_markup() -> None:
    report = golden()
    report.model.hf_id = f"org/{PAYLOAD}"
    report.prompt.text = f"Explain {PAYLOAD} please"
    report.generated.output_text = PAYLOAD
    report.timeline[0].token.token_text = PAYLOAD
    report.timeline[0].logits_summary.topk_probs[0].token_text = PAYLOAD
    report.extensions.narrative = Narrative(summary=f"Peak at token {PAYLOAD!r}")
    report.extensions.risk = RiskExtension(
        risk_score=0.8,
        risk_factors=[PAYLOAD],
        blamed_layers=[BlamedLayer(layer=1, reasons=[PAYLOAD], severity=0.5)],
    )
    report.extensions.compound_signals = [
        CompoundSignal(name=PAYLOAD, description=PAYLOAD, evidence=[PAYLOAD])
    ]
    html = render_html(report)
    doc = parse(html)
    assert not doc.names() & {"img", "script", "iframe", "object", "embed", "link", "base", "form"}
    assert not any(name.startswith("on") for _, attrs in doc.tags for name in attrs)
    text = "".join(doc.text)
    assert "<img src=x onerror=alert(1)></script><script>alert(2)</script>\\x1b[31m\\u202e" in text
    assert "\x1b" not in html and "\u202e" not in html
    titles = [attrs["title"] for tag, attrs in doc.tags if tag == "span" and attrs.get("title")]
    assert any("<img src=x onerror=alert(1)>" in (title or "") for title in titles)  # tooltips hold text too


def test_the_document_is_self_contained() -> None:
    html = render_html(long_report(30))
    doc = parse(html)
    csp = [
        a["content"]
        for tag, a in doc.tags
        if tag == "meta" and a.get("http-equiv") == "Content-Security-Policy"
    ]
    assert csp and "default-src 'none'" in (csp[0] or "")
    assert not re.search(r"https?://|//[a-z0-9]|url\(|@import|@font-face", html, flags=re.IGNORECASE)
    hrefs = [a.get("href") or "" for _, a in doc.tags if "href" in a] + [
        a.get("src") or "" for _, a in doc.tags
    ]
    assert all(href.startswith("#") or href == "" for href in hrefs)
    assert "script" not in doc.names()


def test_full_capture_has_charts_tokens_and_heat_maps() -> None:
    report = long_report(40, layers=6)
    report.extensions.risk = RiskExtension(
        risk_score=0.42, blamed_layers=[BlamedLayer(layer=2, reasons=["Unstable L2 norms"], severity=0.3)]
    )
    doc = parse(render_html(report))
    classes = [a.get("class") or "" for _, a in doc.tags]
    assert classes.count("line-chart") == 4
    assert classes.count("heatmap") == 3
    assert sum(c.startswith("tok s") and c != "tok sx" for c in classes) == 40
    cells = [a for tag, a in doc.tags if tag == "svg" and a.get("class") == "cells"]
    assert all(a["data-cells"] == str(6 * 40) for a in cells)
    assert "Moderate risk" in "".join(doc.text) and "Unstable L2 norms" in "".join(doc.text)


def test_missing_values_are_gaps_not_zeros() -> None:
    values: list[float | None] = [1.0, 2.0, None, None, 3.0, 4.0, None, 5.0]
    svg = line_chart(values, title="t")
    path = re.search(r'class="line" d="([^"]*)"', svg)
    assert path is not None
    assert path.group(1).count("M") == 2  # two runs of two or more points
    assert svg.count("<circle") == 1  # the lone 5.0
    assert "3 of 8 steps have no value" in svg
    assert "No values were recorded" in line_chart([None, None], title="t")


def test_summary_capture_says_there_is_no_layer_data() -> None:
    report = long_report(10)
    for step in report.timeline:
        step.layers = []
    report.run_config.capture_mode = "summary"
    html = render_html(report)
    assert "captured in summary mode" in html
    assert 'class="heatmap"' not in html and html.count('class="line-chart"') == 4


def test_a_report_with_no_steps_and_no_extensions_renders() -> None:
    report = golden()
    report.timeline = []
    report.prompt_analysis = None
    report.health_flags = None
    report.extensions = type(report.extensions)()
    html = render_html(report)
    parse(html)
    assert "no generated steps" in html and "no risk score" in html


@pytest.mark.parametrize("path", ORIGINAL_TRACES, ids=lambda p: p.stem)
def test_original_corevital_traces_render(path: Path) -> None:
    report = load_report(path)
    html = render_html(report)
    doc = parse(html)
    assert len(html.encode("utf-8")) < 5_000_000
    assert html.count('class="heatmap"') >= 3  # every original trace has per-layer data
    assert html.count('class="line-chart"') == 4
    assert report.trace_id in "".join(doc.text)


def test_the_six_original_traces_are_there() -> None:
    assert len(ORIGINAL_TRACES) == 6


def test_long_runs_are_downsampled_to_at_most_400_columns() -> None:
    rows, block = block_columns([[float(i) for i in range(1000)], [None] * 1000], 400)
    assert block == 3 and len(rows[0]) == 334 and rows[0][0] == 1.0 and rows[1][0] is None
    svg = heat_map(HeatMap("m", [[float(i % 17) for i in range(1000)] for _ in range(3)], "u"))
    assert 'viewBox="0 0 334 3"' in svg and "mean of 3 consecutive steps" in svg


def test_log_scale_heat_map_leaves_non_positive_values_missing() -> None:
    svg = heat_map(HeatMap("norm", [[0.0, 10.0, 100.0, None]], "L2", log=True))
    assert 'fill="#d0d0d0"' in svg  # the 0.0 and the None are grey, not the lowest colour


def test_control_characters_are_shown_escaped() -> None:
    assert show_controls("a\x1b[31mb\x00\x7f") == "a\\x1b[31mb\\x00\\x7f"
    assert show_controls("x\u202ey\u2066") == "x\\u202ey\\u2066"
    assert show_controls("line\nnext\t", keep="\n\t") == "line\nnext\t"
    assert show_controls("\ud800") == "\\ud800"  # a lone surrogate cannot be written as UTF-8
    assert esc('<a href="x">&') == "&lt;a href=&quot;x&quot;&gt;&amp;"
    assert show_controls("naïve 日本 🙂") == "naïve 日本 🙂"


def test_a_lone_surrogate_in_a_token_still_encodes() -> None:
    report = golden()
    report.timeline[0].token.token_text = "\ud83d"
    render_html(report).encode("utf-8")


def test_numbers_and_ticks() -> None:
    assert fmt(None) == "–" and fmt(float("nan")) == "–" and fmt(0.12345) == "0.123" and fmt(1234.5) == "1234"
    assert nice_ticks(0, 8.31)[0] == 0 and nice_ticks(0, 8.31)[-1] >= 8.31
    assert tick_labels([8.3, 8.305, 8.31]) == ["8.300", "8.305", "8.310"]
    assert tick_labels([0.0, 0.25, 0.5]) == ["0.00", "0.25", "0.50"]


def test_steps_are_marked_where_early_warnings_fired() -> None:
    report = long_report(30)
    report.extensions.early_warning = EarlyWarning.model_validate(
        {
            "failure_risk": 0.6,
            "warning_signals": ["margin_collapsed"],
            "firings": [{"signal": "margin_collapsed", "step": 12}],
        }
    )
    html = render_html(report)
    assert "early warning: margin_collapsed at step 12" in html
    assert "step 12: early warning: margin_collapsed" in html


def test_malformed_layer_indices_and_head_counts_do_not_break_the_page() -> None:
    report = long_report(5, layers=3)
    report.timeline[0].layers[0].layer_index = 10**9
    report.timeline[1].layers[0].layer_index = -1
    report.model.num_attention_heads = 0
    for step in report.timeline:
        for layer in step.layers:
            layer.attention_summary.collapsed_head_rate = None
    html = render_html(report)
    assert html.count('class="heatmap"') == 2 and 'data-cells="15"' in html  # 3 layers x 5 steps
    assert "No values were recorded for this metric" in html  # the collapsed-head rate: no rate, no heads


def test_declared_onset_fields_mark_the_charts_and_tables() -> None:
    report = long_report(30)
    report.extensions.early_warning = EarlyWarning(
        failure_risk=0.7, warning_signals=["entropy_rising"], firings=None, peak_step=17
    )
    report.extensions.compound_signals = [CompoundSignal(name="context_loss", first_step=9)]
    report.extensions.risk = RiskExtension(
        risk_score=0.8, blamed_layers=[BlamedLayer(layer=2, severity=0.5, first_step=4)]
    )
    html = render_html(report)
    assert "(reached at step 17)" in html and "compound signal: context_loss at step 9" in html
    assert "<th>From step</th>" in html and "<td>4</td>" in html
    assert "early warning: entropy_rising at step" not in html  # no firings: nothing to mark


def test_a_legacy_report_without_onsets_renders_its_early_warning() -> None:
    legacy = load_report(
        Path(__file__).resolve().parents[1] / "data" / "original-corevital" / "trace_8d0bad87.json"
    )
    warning = legacy.extensions.early_warning
    assert warning is not None and warning.firings is None and warning.peak_step is None
    html = render_html(legacy)
    assert "Failure risk <b>0.6</b>. Firings" in html and "<td>mid_layer_anomaly</td><td>–</td>" in html
