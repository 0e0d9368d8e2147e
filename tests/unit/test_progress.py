"""The progress bar of the long commands: a redrawn line on a terminal, a line per 10% in a log."""

from __future__ import annotations

import io

from corevital.progress import Progress


class FakeTTY(io.StringIO):
    def isatty(self) -> bool:
        return True


def ticking(step: float):
    now = [0.0]

    def clock() -> float:
        value = now[0]
        now[0] += step
        return value

    return clock


def test_eta_from_the_average_time_per_item() -> None:
    stream = io.StringIO()
    bar = Progress(4, "validate", stream=stream, clock=ticking(10.0))  # start at t=0
    bar.advance()  # t=10: one item in 10 s, three left
    assert bar.line().startswith("validate [######------------------] 1/4  25% elapsed 0:20 ETA 1:00")


def test_log_output_gets_one_line_per_decile() -> None:
    stream = io.StringIO()
    bar = Progress(200, "calibrate", stream=stream, clock=ticking(1.0))
    bar.start()
    for _ in range(200):
        bar.advance()
    lines = stream.getvalue().splitlines()
    assert len(lines) == 11  # 0%, 10%, ..., 100%
    assert lines[-1].startswith("calibrate [########################] 200/200 100%")
    assert "\r" not in stream.getvalue()


def test_terminal_output_redraws_one_line() -> None:
    stream = FakeTTY()
    bar = Progress(3, "runs", stream=stream, clock=ticking(1.0))
    bar.start()
    for _ in range(3):
        bar.advance()
    text = stream.getvalue()
    assert text.count("\r") == 3 and text.endswith("\n") and text.count("\n") == 1
    assert "ETA 0:00" in text.splitlines()[-1].split("\r")[-1]
