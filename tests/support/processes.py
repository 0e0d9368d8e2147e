"""Stopping a process a test started: a signal, a bounded wait, then kill."""

from __future__ import annotations

import signal
import subprocess
from typing import Any

__all__ = ["stop_process"]


def stop_process(
    process: subprocess.Popen[Any],
    signum: int = signal.SIGTERM,
    *,
    timeout: float = 20.0,
    kill_timeout: float | None = 20.0,
) -> int | None:
    """Send ``signum`` to ``process`` if it still runs and wait ``timeout`` seconds for it to end; kill
    it when it has not (then wait ``kill_timeout`` seconds, None: as long as it takes). Its exit code."""
    if process.poll() is None:
        process.send_signal(signum)
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=kill_timeout)
    return process.returncode
