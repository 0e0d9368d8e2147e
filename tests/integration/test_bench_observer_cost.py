"""bench/observer_cost.py: the observer's per-step host time, and its layer wrappers' cost a call."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "bench" / "observer_cost.py"


def test_the_bench_times_each_step_place_and_each_wrapper() -> None:
    done = subprocess.run(
        [sys.executable, str(BENCH), "--shape", "tiny", "--runs", "1"],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    rows = {
        cells[0]: [float(cell) for cell in cells[1:]]
        for line in done.stdout.splitlines()
        if line.startswith("| ") and not line.startswith(("| mode", "| call"))
        for cells in [[cell.strip() for cell in line.strip("|").split("|")]]
    }
    assert set(rows) == {"summary", "full", "decoder layer", "pre-MLP norm"}
    for mode in ("summary", "full"):
        *places, step = rows[mode]
        assert all(value > 0 for value in places) and abs(sum(places) - step) < 0.25
    for call in ("decoder layer", "pre-MLP norm"):
        bare, wrapped, extra = rows[call]
        assert bare > 0 and wrapped > 0 and abs(wrapped - bare - extra) < 2.5e-3
