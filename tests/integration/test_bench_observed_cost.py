"""The CPU benches of observed generations' host cost: bench/layer_tap_cost.py (observed
generations beside plain generate(), both ways of reading the layers' hidden states) and
bench/observer_cost.py (the observer's per-step host time, its wrappers' cost a call)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "bench"


def _table_rows(script: str, *args: str) -> list[list[str]]:
    """The cells of every Markdown table row the bench printed (headers and rules left out)."""
    done = subprocess.run(
        [sys.executable, str(BENCH / script), "--shape", "tiny", *args],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    lines = [line for line in done.stdout.splitlines() if line.startswith("| ")]
    return [
        [cell.strip() for cell in line.strip("|").split("|")]
        for line in lines
        if not line.startswith(("| run ", "| mode ", "| call "))
    ]


def test_layer_tap_cost_times_both_ways_beside_plain() -> None:
    rows = _table_rows("layer_tap_cost.py", "--rounds", "1")
    assert [cells[0] for cells in rows] == [
        "plain",
        "summary, wrappers",
        "summary, transformers' hooks",
        "full, wrappers",
        "full, transformers' hooks",
    ]


def test_observer_cost_times_each_step_place_and_each_wrapper() -> None:
    rows = {
        cells[0]: [float(cell) for cell in cells[1:]]
        for cells in _table_rows("observer_cost.py", "--runs", "1")
    }
    assert set(rows) == {"summary", "full", "decoder layer", "entry norm", "pre-MLP norm"}
    for mode in ("summary", "full"):
        *places, step = rows[mode]
        assert all(value > 0 for value in places) and abs(sum(places) - step) < 0.25
    for call in ("decoder layer", "entry norm", "pre-MLP norm"):
        bare, wrapped, extra = rows[call]
        assert bare > 0 and wrapped > 0 and abs(wrapped - bare - extra) < 2.5e-3
