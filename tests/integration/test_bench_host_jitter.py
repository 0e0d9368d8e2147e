"""bench/host_jitter.py: plain generate() timed under each condition, wall and thread CPU time."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "bench"
LINE = re.compile(r"^(\w+): wall [\d.]+-[\d.]+ s, median [\d.]+; thread CPU [\d.]+-[\d.]+ s, median [\d.]+$")


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, str(BENCH / "host_jitter.py"), "--shape", "tiny", "--runs", "2", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=300)


def test_each_condition_gets_a_line_and_no_condition_means_default() -> None:
    named = _run("threads1", "nogc")
    assert named.returncode == 0, named.stderr
    assert [m.group(1) for m in map(LINE.match, named.stdout.splitlines()) if m] == ["threads1", "nogc"]
    plain = _run()
    assert plain.returncode == 0, plain.stderr
    assert [m.group(1) for m in map(LINE.match, plain.stdout.splitlines()) if m] == ["default"]


def test_an_unknown_condition_is_refused_before_any_run() -> None:
    done = _run("bogus")
    assert done.returncode == 2 and "unknown conditions: bogus" in done.stderr and not done.stdout
