"""The progress of the long commands: a rich bar on a terminal, a plain line per 10% in a log."""

from __future__ import annotations

import io
from collections.abc import Callable

from rich.console import Console

from corevital.progress import Progress


def ticking(step: float) -> Callable[[], float]:
    now = [0.0]

    def clock() -> float:
        value = now[0]
        now[0] += step
        return value

    return clock


def console(*, terminal: bool) -> tuple[Console, io.StringIO]:
    stream = io.StringIO()
    return Console(file=stream, force_terminal=terminal, width=120, color_system=None), stream


def test_eta_from_the_average_time_per_item() -> None:
    out, _ = console(terminal=False)
    bar = Progress(4, "validate", console=out, clock=ticking(10.0))  # start at t=0
    bar.advance()  # t=10: one item in 10 s, three left
    assert bar.line() == "validate: 1/4  25% elapsed 0:20 ETA 1:00"


def test_log_output_gets_one_plain_line_per_decile() -> None:
    out, stream = console(terminal=False)
    bar = Progress(200, "calibrate", console=out, clock=ticking(1.0))
    bar.start()
    for _ in range(200):
        bar.advance()
    lines = stream.getvalue().splitlines()
    assert len(lines) == 11  # 0%, 10%, ..., 100%
    assert lines[0].startswith("calibrate: 0/200   0% elapsed") and lines[0].endswith("ETA ?")
    assert lines[-1].startswith("calibrate: 200/200 100%")
    assert "\r" not in stream.getvalue() and "\x1b" not in stream.getvalue()


def test_terminal_output_is_a_rich_bar_that_stops_when_done() -> None:
    out, stream = console(terminal=True)
    bar = Progress(3, "runs", console=out, clock=ticking(1.0))
    bar.start()
    for _ in range(3):
        bar.advance()
    assert not bar.running  # stopped by the last item
    final = stream.getvalue().rstrip("\n").split("\r")[-1]
    assert "runs" in final and "3/3" in final and "100%" in final and "ETA" in final
    assert "━" in final  # the bar itself


def test_closing_early_stops_the_bar() -> None:
    out, stream = console(terminal=True)
    with Progress(10, "runs", console=out, clock=ticking(1.0)) as bar:
        bar.start()
        bar.advance(4)
        assert bar.running
    assert not bar.running
    assert "4/10" in stream.getvalue()


def test_status_line_on_a_terminal_only_and_not_when_quiet() -> None:
    from corevital.progress import status_line

    out, stream = console(terminal=True)
    with status_line("Loading the model", console=out) as stage:
        stage("Converting model.gguf once into the cache")
    drawn = stream.getvalue()
    assert "Loading the model" in drawn or "Converting model.gguf" in drawn
    for quiet, terminal in ((True, True), (False, False)):
        out, stream = console(terminal=terminal)
        with status_line("Loading the model", quiet=quiet, console=out) as stage:
            stage("Converting")
        assert stream.getvalue() == ""
