"""bench/step_probe.py: plain, plain-hold and the capture modes timed side by side, phase by phase."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "bench"


def test_the_probe_times_every_runner_phase_by_phase_beside_plain() -> None:
    done = subprocess.run(
        [sys.executable, str(BENCH / "step_probe.py"), "--shape", "tiny", "--cases", "16:4", "--rounds", "2"],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    rows = {
        cells[0]: [float(cell) for cell in cells[1:]]
        for cells in (
            [cell.strip() for cell in line.strip("|").split("|")]
            for line in done.stdout.splitlines()
            if line.startswith("| ") and not line.startswith("| runner")
        )
    }
    assert list(rows) == ["plain", "summary", "full", "plain-hold"]
    assert rows["plain"][1] == 1.0 and rows["plain"][8] == 1.0  # plain against itself, run and step
    for name, (wall, paired, cpu, _, before, after, first, step, _, end) in rows.items():
        assert all(value > 0 for value in (wall, paired, cpu, before, after, first, step, end)), name
        assert first + end < wall and before + after < wall, name
    runs = [line for line in done.stdout.splitlines() if line.startswith("- ")]
    assert [line.split(":")[0] for line in runs] == ["- plain", "- summary", "- full", "- plain-hold"]
    assert all(len(line.split(":")[1].split()) == 2 for line in runs)  # one time a round
