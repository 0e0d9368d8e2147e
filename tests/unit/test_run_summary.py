"""The run summary `corevital run` prints: model text never reaches the terminal raw."""

from __future__ import annotations

from corevital.report.encoding import report_from_json
from corevital.summary import format_summary, summarize_report
from tests.support.golden import GOLDEN


def test_control_characters_in_the_output_are_shown_escaped() -> None:
    report = report_from_json(GOLDEN.read_bytes())
    report.generated.output_text = "ok\x1b[2J\x1b]0;pwned\x07 line\nnext\u202eevil"
    text = format_summary(summarize_report(report, "runs/corevital.db#x", 12.0))
    assert "\x1b" not in text and "\x07" not in text and "\u202e" not in text
    output = next(line for line in text.splitlines() if line.startswith("Output: "))
    assert output == "Output: ok\\x1b[2J\\x1b]0;pwned\\x07 line next\\u202eevil"


def test_a_report_that_was_not_stored_says_so() -> None:
    report = report_from_json(GOLDEN.read_bytes())
    assert "Report: (not stored)" in format_summary(summarize_report(report, "", 1.0))
