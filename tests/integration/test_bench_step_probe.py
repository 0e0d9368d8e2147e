"""bench/step_probe.py: plain, its controls and the capture modes timed side by side, phase by phase."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "bench"
RUNNERS = ["plain", "summary", "full", "plain-again", "plain-hold"]


def _probe(*args: str, timeout: int = 300, check: bool = True) -> subprocess.CompletedProcess[str]:
    """bench/step_probe.py on the tiny shape with ``args``."""
    command = [sys.executable, str(BENCH / "step_probe.py"), "--shape", "tiny", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=check)


def test_the_probe_times_every_runner_phase_by_phase_beside_plain() -> None:
    done = _probe("--cases", "16:4,8:3", "--rounds", "2", "--controls", "plain-again,plain-hold")
    cases = done.stdout.split("\n# tiny ")[1:]
    assert [case.split()[0] for case in cases] == ["16:4", "8:3"]
    for case in cases:
        rows = {
            cells[0]: [float(cell.split()[0]) for cell in cells[1:]]  # a paired cell: "ratio (interval)"
            for cells in (
                [cell.strip() for cell in line.strip("|").split("|")]
                for line in case.splitlines()
                if line.startswith("| ") and not line.startswith("| runner")
            )
        }
        assert list(rows) == RUNNERS
        assert rows["plain"][1] == 1.0 and rows["plain"][8] == 1.0  # plain against itself, run and steps
        for name, (wall, paired, cpu, _, before, after, first, step, _, steps, slowest, end) in rows.items():
            assert all(value > 0 for value in (wall, paired, cpu, before, after, first, step, end)), name
            assert first + end < wall and before + after < wall, name
            assert step <= slowest <= steps < wall, name  # the median step, the slowest, all of them
        runs = [line for line in case.splitlines() if line.startswith("- ")]
        assert [line[2:].split(":")[0] for line in runs] == RUNNERS
        assert all(len(line.split(":")[1].split()) == 2 for line in runs)  # one time a round


def test_the_probe_says_which_controls_it_knows() -> None:
    done = _probe("--controls", "plain-twice", timeout=120, check=False)
    assert done.returncode == 2
    assert "unknown controls: plain-twice" in done.stderr.splitlines()[-1]


def test_the_probe_splits_a_summary_step_into_wrappers_copy_and_observer() -> None:
    done = _probe(
        "--cases",
        "16:4",
        "--modes",
        "summary",
        "--rounds",
        "2",
        "--warmup",
        "1",
        "--sections",
        "observer,launches,phases",
        "--controls",
        "plain-wrapped,plain-copied",
    )
    sections = done.stdout.split("\n## ")[1:]
    assert [section.splitlines()[0] for section in sections] == [
        "the observer's own Python",
        "launches",
        "phases",
    ]
    observer, launches, phases = (
        [
            [cell.strip() for cell in line.strip("|").split("|")]
            for line in section.splitlines()
            if line.startswith("| ")
        ]
        for section in sections
    )
    summary = observer[1]  # under the header
    assert summary[0] == "summary" and all(float(cell) > 0 for cell in summary[1:])
    assert abs(sum(float(cell) for cell in summary[1:4]) - float(summary[4])) < 0.2  # a step: the three calls
    assert [row[0] for row in launches[1:]] == [
        "`row + row` (one kernel)",
        "`torch.cat` of 64 rows, dim 1",
        "a norm's call, bare",
        "the norm through a wrapper keeping its input",
    ]
    assert all(float(row[1]) > 0 for row in launches[1:])
    assert [row[0] for row in phases[1:]] == ["plain", "summary", "plain-wrapped", "plain-copied"]


def test_the_probe_stops_on_a_host_past_its_noise_gate() -> None:
    """--noise-gate: a gate no host meets stops the probe after the first case's warm-up (status 3,
    no section run); one every host meets prints its check and times the case as usual."""
    common = ("--cases", "8:3", "--rounds", "1", "--warmup", "1", "--sections", "phases", "--controls", "")
    stopped = _probe(*common, "--noise-gate", "1e-9", timeout=120, check=False)
    assert stopped.returncode == 3, stopped.stderr[-2000:]
    assert "# tiny 8:3 b1: host too noisy" in stopped.stdout and "## phases" not in stopped.stdout
    done = _probe(*common, "--noise-gate", "1000", "--gate-tries", "2", timeout=120)
    assert "# tiny 8:3 b1 host check: plain runs [" in done.stdout
    assert "## phases" in done.stdout and "| summary |" in done.stdout
    refused = _probe(*common, "--gate-tries", "0", timeout=120, check=False)
    assert refused.returncode == 2 and "--gate-tries must be at least 1" in refused.stderr
