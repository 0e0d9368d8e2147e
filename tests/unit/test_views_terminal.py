"""The terminal views' building blocks: sparklines, escaping, the run digest and token divergence."""

from __future__ import annotations

import io
import json

import pytest

from corevital.report.encoding import report_from_json
from corevital.sinks.base import trace_row_from_report
from corevital.views.compare import first_divergence
from corevital.views.digest import SeriesStats, digest_document
from corevital.views.terminal import (
    SPARK_BARS,
    make_console,
    one_line,
    runs_table,
    safe_block,
    show_run,
    sparkline,
)
from tests.support.golden import GOLDEN


def test_sparkline_spans_the_bars_and_leaves_gaps() -> None:
    assert sparkline([0.0, 7.0, None, 3.5]) == "▁█ ▅"
    assert sparkline([2.0, 2.0]) == SPARK_BARS[3] * 2
    assert sparkline([None, None]) == "  "
    assert sparkline([]) == ""


def test_a_long_sparkline_is_averaged_into_buckets() -> None:
    line = sparkline([float(i % 2) for i in range(200)] + [None] * 40, width=60)
    assert len(line) == 60 and line.endswith("  ") and set(line[:45]) == {SPARK_BARS[3]}


def test_control_characters_are_shown_escaped() -> None:
    assert one_line("a\x1b[2Jb\nc\td\u202e") == "a\\x1b[2Jb\\nc\\td\\u202e"
    assert one_line("abcdef", 4) == "abc…"
    assert safe_block("line\n\tnext\x07") == "line\n\tnext\\x07"


def test_the_console_is_plain_and_wide_when_not_a_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("COLUMNS", raising=False)
    console = make_console()
    assert not console.is_terminal and console.width == 200 and console.color_system is None


def test_first_divergence() -> None:
    assert first_divergence([[1, 2, 3], [1, 2, 4]]).step == 2
    same = first_divergence([[1, 2], [1, 2]])
    assert same.identical and same.step is None and same.common_prefix == 2
    ended = first_divergence([[1, 2], [1, 2, 3]])
    assert not ended.identical and ended.step == 2


def test_series_stats_skip_missing_values() -> None:
    stats = SeriesStats.of([1.0, None, 3.0, 2.0])
    assert (stats.mean, stats.min, stats.max, stats.max_step) == (2.0, 1.0, 3.0, 2)
    assert (stats.finite, stats.steps, stats.p50) == (3, 4, 2.0)
    assert SeriesStats.of([]).mean is None


def test_digest_of_a_report_document() -> None:
    document = json.loads(GOLDEN.read_text(encoding="utf-8"))
    digest = digest_document(document)
    assert digest.risk_score == 1.0 and [f.name for f in digest.risk_factors] == ["nan_or_inf"]
    assert digest.flags_set == ["nan_detected"] and digest.compound_signals[0].name == "confident_confusion"
    assert [w.signal for w in digest.warnings_fired] == ["margin_declining"]
    assert digest.blamed_layers[0].layer == 1 and digest.blamed_layers[0].reasons == ["NaN/Inf"]
    assert digest.token_ids == [7, 8] and len(digest.entropy) == 2
    assert json.loads(json.dumps(digest.to_json()))["entropy_stats"]["steps"] == 2


def test_warning_signals_without_firings_have_no_step() -> None:
    early = {"warning_signals": ["a", "b"], "firings": [{"signal": "b", "step": 4}]}
    digest = digest_document({"extensions": {"early_warning": early}})
    assert [(w.signal, w.step) for w in digest.warnings_fired] == [("b", 4), ("a", None)]


def test_a_malformed_document_is_read_as_absent_parts() -> None:
    digest = digest_document({"trace_id": "x", "timeline": "nope", "extensions": {"risk": [1]}})
    assert digest.trace_id == "x" and digest.risk_score is None and digest.entropy == []
    assert digest.model_id == "?" and digest.flags == {}


def test_show_gives_blame_steps_and_the_intervention() -> None:
    document = json.loads(GOLDEN.read_text(encoding="utf-8"))
    risk = document["extensions"]["risk"]
    risk["blamed_layers"] = [{"layer": 14, "reasons": ["NaN/Inf"], "severity": 1.0, "first_step": 3}]
    document["extensions"]["intervention"] = {
        "policy": "StopOnNonFinite",
        "step": 4,
        "reason": "NaN in logits",
    }
    out = io.StringIO()
    make_console(out).print(show_run(digest_document(document)))
    text = out.getvalue()
    assert "stopped  by StopOnNonFinite at step 4: NaN in logits" in text
    layer_line = next(line for line in text.splitlines() if line.strip().startswith("14"))
    assert layer_line.split() == ["14", "1.00", "3", "NaN/Inf"]


def test_colour_on_a_terminal_and_no_colour_with_no_color(monkeypatch: pytest.MonkeyPatch) -> None:
    row = trace_row_from_report(report_from_json(GOLDEN.read_bytes()))  # risk 1.00: bold red
    monkeypatch.setenv("FORCE_COLOR", "1")  # what a terminal gets
    monkeypatch.delenv("NO_COLOR", raising=False)
    out = io.StringIO()
    make_console(out).print(runs_table([row]))
    assert "\x1b[1;31m1.00" in out.getvalue()
    monkeypatch.setenv("NO_COLOR", "1")
    out = io.StringIO()
    make_console(out).print(runs_table([row]))
    assert "31m" not in out.getvalue() and "1.00" in out.getvalue()
