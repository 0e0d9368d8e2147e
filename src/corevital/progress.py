"""Progress of the long commands (``calibrate``, ``validate``) on stderr, drawn by rich.

:func:`status_line` is the one-line spinner of a step without a count (loading a model).

On a terminal, a rich progress bar redrawn in place: label, bar, done/total, percentage, elapsed
time and the time remaining. Otherwise (a log file, CI) a plain line at the start and at every
further 10%, so the log shows progress without carriage returns or escape codes. One command
drives one :class:`Progress`; it stops by itself when the last item is done, and :meth:`close` (or
leaving a ``with`` block) stops it when the work ends early.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from rich.console import Console

from corevital.closing import ClosesOnExit

if TYPE_CHECKING:  # rich.progress is imported when a bar is drawn (not for a status line)
    from rich.progress import Progress as RichProgress
    from rich.progress import TaskID


def _clock(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


class Progress(ClosesOnExit):
    def __init__(
        self,
        total: int,
        label: str,
        *,
        console: Console | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.total = max(0, total)
        self.label = label
        self.done = 0
        self._console = console if console is not None else Console(stderr=True)
        self._clock = clock
        self._start = clock()
        self._last_decile = -1
        self._bar: RichProgress | None = None
        self._task: TaskID | None = None

    @property
    def running(self) -> bool:
        """Whether the live bar is on the terminal now."""
        return self._bar is not None

    def line(self) -> str:
        """The plain progress line: ``label done/total pct elapsed M:SS ETA M:SS``."""
        elapsed = self._clock() - self._start
        share = self.done / self.total if self.total else 1.0
        eta = "?" if self.done == 0 else _clock(elapsed / self.done * (self.total - self.done))
        return f"{self.label}: {self.done}/{self.total} {share:4.0%} elapsed {_clock(elapsed)} ETA {eta}"

    def start(self) -> None:
        """Show the empty bar (or the 0% line) before the first, possibly long, item."""
        if not self._console.is_terminal:
            self._plain_line()
            return
        if self._bar is None:
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                TaskProgressColumn,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )
            from rich.progress import Progress as RichProgress

            self._bar = RichProgress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TaskProgressColumn(),
                TimeElapsedColumn(),
                TextColumn("ETA"),
                TimeRemainingColumn(),
                console=self._console,
                get_time=self._clock,
            )
            self._task = self._bar.add_task(self.label, total=self.total, completed=self.done)
            self._bar.start()

    def advance(self, n: int = 1) -> None:
        self.done = min(self.total, self.done + n)
        if not self._console.is_terminal:
            self._plain_line()
            return
        if self._bar is None:
            self.start()
        assert self._bar is not None and self._task is not None
        self._bar.update(self._task, completed=self.done)
        if self.done >= self.total:
            self.close()

    def close(self) -> None:
        """Stop the live bar, leaving its last state on the terminal."""
        if self._bar is not None:
            self._bar.stop()
            self._bar = None

    def _plain_line(self) -> None:
        decile = int(10 * self.done / self.total) if self.total else 10
        if decile != self._last_decile:
            self._last_decile = decile
            self._console.print(self.line(), markup=False, highlight=False, soft_wrap=True)


@contextmanager
def status_line(
    message: str, *, quiet: bool = False, console: Console | None = None
) -> Iterator[Callable[[str], None]]:
    """A spinner and ``message`` on stderr while inside; yields a function that changes the message.

    Drawn only on a terminal and when not ``quiet``; the line is erased on exit, so what the
    command prints next starts on a clean line. Elsewhere (a pipe, a log file) nothing is written.
    """
    out = console if console is not None else Console(stderr=True)
    if quiet or not out.is_terminal:
        yield lambda _text: None
        return
    with out.status(message, spinner="dots") as status:

        def update(text: str) -> None:
            status.update(text)

        yield update
