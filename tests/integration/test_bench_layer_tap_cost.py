"""bench/layer_tap_cost.py: observed generations timed beside plain generate(), both ways of reading
the layers' hidden states."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "bench" / "layer_tap_cost.py"


def test_the_bench_times_both_ways_beside_plain() -> None:
    done = subprocess.run(
        [sys.executable, str(BENCH), "--shape", "tiny", "--rounds", "1"],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    rows = [line.split("|")[1].strip() for line in done.stdout.splitlines() if line.startswith("| ")]
    assert rows[1:] == [
        "plain",
        "summary, wrappers",
        "summary, transformers' hooks",
        "full, wrappers",
        "full, transformers' hooks",
    ]
