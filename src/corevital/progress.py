"""A small progress bar with an ETA for the long commands (``calibrate``, ``validate``).

On a terminal it redraws one line; otherwise (a log file, CI) it prints a line at every 10% so the
log shows progress without thousands of carriage returns. No dependency, thread-unsafe by design
(one command drives it).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import TextIO


def _clock(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


class Progress:
    def __init__(
        self,
        total: int,
        label: str,
        *,
        stream: TextIO | None = None,
        clock: Callable[[], float] = time.monotonic,
        width: int = 24,
    ) -> None:
        self.total = max(0, total)
        self.label = label
        self.done = 0
        self._stream = stream if stream is not None else sys.stderr
        self._clock = clock
        self._start = clock()
        self._width = width
        self._tty = bool(getattr(self._stream, "isatty", lambda: False)())
        self._last_decile = -1

    def line(self) -> str:
        elapsed = self._clock() - self._start
        share = self.done / self.total if self.total else 1.0
        filled = int(round(share * self._width))
        bar = "#" * filled + "-" * (self._width - filled)
        eta = "?" if self.done == 0 else _clock(elapsed / self.done * (self.total - self.done))
        return (
            f"{self.label} [{bar}] {self.done}/{self.total} {share:4.0%} elapsed {_clock(elapsed)} ETA {eta}"
        )

    def advance(self, n: int = 1) -> None:
        self.done = min(self.total, self.done + n)
        if self._tty:
            self._stream.write("\r" + self.line())
            if self.done >= self.total:
                self._stream.write("\n")
            self._stream.flush()
            return
        decile = int(10 * self.done / self.total) if self.total else 10
        if decile != self._last_decile:
            self._last_decile = decile
            self._stream.write(self.line() + "\n")
            self._stream.flush()

    def start(self) -> None:
        """Show the empty bar before the first (possibly long) item."""
        if self._tty:
            self._stream.write(self.line())
            self._stream.flush()
        else:
            self._last_decile = 0
            self._stream.write(self.line() + "\n")
            self._stream.flush()
