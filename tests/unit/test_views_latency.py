"""`corevital show` and the run summary: latency of the sequence, risk factors in words."""

from __future__ import annotations

import io
import json

from rich.console import Console

from corevital.report.encoding import report_from_json, report_to_json
from corevital.report.schema import LatencyPercentiles
from corevital.summary import format_summary, summarize_report
from corevital.views.digest import digest_document
from corevital.views.terminal import FACTOR_WORDS, factor_words, latency_text, show_run
from tests.support.golden import GOLDEN


def _document(with_latency: bool) -> dict[str, object]:
    report = report_from_json(GOLDEN.read_text(encoding="utf-8"))
    if with_latency:
        report.summary.ttft_ms = 123.4
        report.summary.tokens_per_second = 21.5
        report.summary.inter_token_ms = LatencyPercentiles(p50=30.0, p90=41.25, p99=50.0, mean=33.3)
    document: dict[str, object] = json.loads(report_to_json(report))
    return document


def _shown(document: dict[str, object]) -> str:
    console = Console(file=io.StringIO(), width=200)
    console.print(show_run(digest_document(document)))
    text: str = console.file.getvalue()  # type: ignore[attr-defined]
    return text


def test_show_has_a_latency_row_only_when_measured() -> None:
    shown = _shown(_document(True))
    (line,) = [line for line in shown.splitlines() if line.strip().startswith("latency")]
    assert "first token 123 ms" in line and "21.5 tokens/s" in line
    assert "p50 30.0 / p90 41.2 / p99 50.0 ms" in line
    assert not any(line.strip().startswith("latency") for line in _shown(_document(False)).splitlines())


def test_risk_factors_are_said_in_words() -> None:
    document = _document(False)
    names = document["extensions"]["risk"]["risk_factors"]  # type: ignore[index]
    assert names
    shown = _shown(document)
    for name in names:
        if name in FACTOR_WORDS:
            assert factor_words(name) in shown
    summary = format_summary(summarize_report(report_from_json(json.dumps(document)), "", 1000.0))
    risk_line = next(line for line in summary.splitlines() if line.startswith("Risk score: "))
    assert factor_words(names[0]) in risk_line and names[0] not in risk_line
    assert factor_words("some_new_factor") == "some new factor"


def test_latency_text_leaves_out_what_was_not_measured() -> None:
    assert latency_text(None, None, None) == ""
    assert latency_text(5.0, None, {"p50": 1.0, "p90": None, "p99": None}) == "first token 5 ms"
