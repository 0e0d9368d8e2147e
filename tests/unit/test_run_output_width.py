"""What ``corevital run`` prints fits the terminal: the footer under a batch table wraps to its width."""

from __future__ import annotations

import dataclasses
import io

from rich.console import Console

from corevital.cli.run_output import batch_footer, batch_table
from corevital.summary import RunSummary

PATH = "/tmp/a-rather-long-directory-name/out/trace_016ac086-ed8c-4ad7-96b8-c085242a1b3b.json"


def _summary(number: int, risk: float, factors: list[str]) -> RunSummary:
    return RunSummary(
        trace_id=f"t{number}",
        model="m",
        prompt_tokens=5,
        generated_tokens=8,
        finish_reason="length",
        elapsed_ms=10.0,
        entropy_min=0.1,
        entropy_mean=1.0,
        entropy_max=2.0,
        peak_entropy_step=1,
        peak_entropy_token="x",
        risk_score=risk,
        risk_factors=factors,
        location=PATH,
        calibration_warnings=["the prompt is far longer than any prompt of the calibration set " * 3],
    )


FACTORS = [
    "elevated_entropy",
    "high_surprisal",
    "low_margin",
    "entropy_peaks",
    "rising_entropy",
    "surprisal_spikes",
]


def test_the_footer_wraps_to_the_terminal_and_keeps_the_report_path_whole() -> None:
    summaries = [_summary(1, 0.8, FACTORS), _summary(2, 0.6, FACTORS[:4]), _summary(3, 0.1, [])]
    for width in (80, 120):
        lines = batch_footer(summaries, width=width)
        assert lines[-2] == "Reports: 3 of 3 stored; the first:" and lines[-1] == f"  {PATH}"
        assert all(len(line) <= width for line in lines[:-1]), [ln for ln in lines if len(ln) > width]
        assert lines[0].startswith("#1 risk 0.80: ") and lines[1].startswith("  ")
        # The same words as without wrapping, in the same order.
        unwrapped = batch_footer(summaries)
        assert " ".join(" ".join(lines[:-2]).split()) == " ".join(" ".join(unwrapped[:-1]).split())
    assert batch_footer(summaries)[-1] == f"Reports: 3 of 3 stored (the first: {PATH})"


def test_the_batch_table_is_one_line_per_sequence_at_80_and_120_columns() -> None:
    flags = [[], ["high_entropy_steps=4"], ["high_entropy_steps=9", "repetition_loop_detected"]]
    summaries = [
        dataclasses.replace(
            _summary(number, risk, []),
            flags=flag,
            output_text="The sky is blue because of the way our eyes perceive the colours " * 2,
            tokens_per_second=12.345,
        )
        for number, (risk, flag) in enumerate(zip((0.04, 0.6, 0.76), flags, strict=True), start=1)
    ]
    for width in (80, 120):
        console = Console(width=width, record=True, file=io.StringIO())
        console.print(batch_table(summaries))
        lines = console.export_text().splitlines()
        assert len(lines) == 1 + len(summaries), lines
        assert all(len(line) <= width for line in lines)
        assert lines[0].split()[:6] == ["#", "risk", "flags", "finish", "tokens", "tokens/s"]
        for number, line in enumerate(lines[1:], start=1):
            assert line.split()[:2] == [str(number), f"{summaries[number - 1].risk_score:.2f}"]
            assert " 5+8 " in line and " 12.3 " in line and line.rstrip().endswith("…")
