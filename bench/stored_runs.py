"""Wall time of ``corevital runs`` and ``corevital show`` on a 10,000-run store, each in a fresh process.

Every command runs as a user types it (the ``corevital`` script of this Python environment, output
to a pipe), once to warm the file cache and then ``--repeat`` times; the figures are the median,
min and max wall time of the whole process, start to exit. The store comes from
``bench/make_store.py``.

    .venv/bin/python bench/stored_runs.py [--db .bench-out/stored-runs/store-10k.db] [--repeat 7]

Acceptance (issue 14): ``runs`` first page < 300 ms, ``show`` < 200 ms.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

from corevital.sinks.base import TraceQuery
from corevital.sinks.sqlite import SQLiteStore

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DB = ROOT / ".bench-out" / "stored-runs" / "store-10k.db"
SCRIPT = Path(sys.executable).with_name("corevital")


def wall_times(command: list[str], repeat: int) -> list[float]:
    """Milliseconds of each of ``repeat`` runs of ``command`` (after one warm-up run)."""
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        times.append((time.perf_counter() - started) * 1000)
    return times


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", type=Path, default=DEFAULT_DB)
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()
    if not args.db.exists():
        print(f"no store at {args.db}: run bench/make_store.py first", file=sys.stderr)
        return 2
    with SQLiteStore(args.db) as store:
        total = store.count()
        newest = store.list(TraceQuery(limit=1))[0]
        full = next(row for row in store.list(TraceQuery(limit=500)) if row.capture_mode == "full")
        summary = next(row for row in store.list(TraceQuery(limit=500)) if row.capture_mode != "full")
        model = newest.model_id
    db = str(args.db)
    cases = [
        ("runs (first page)", ["runs", "--db", db]),
        ("runs --sort risk", ["runs", "--db", db, "--sort", "risk"]),
        (
            "runs --flag repetition_loop --since 7d",
            ["runs", "--db", db, "--flag", "repetition_loop", "--since", "7d"],
        ),
        (f"runs --model {model}", ["runs", "--db", db, "--model", model]),
        ("runs --json", ["runs", "--db", db, "--json"]),
        (f"show {summary.trace_id[:8]} (summary capture)", ["show", summary.trace_id[:8], "--db", db]),
        (f"show {full.trace_id[:8]} (full capture)", ["show", full.trace_id[:8], "--db", db]),
        ("compare --by model", ["compare", "--db", db]),
    ]
    print(f"store: {db} ({total} runs, {args.db.stat().st_size / 2**20:.0f} MiB)")
    print(f"machine: {cpu_name()}, {os.cpu_count()} cores; Python {platform.python_version()}")
    print(f"{'command':<58} {'median':>8} {'min':>8} {'max':>8}  (ms, {args.repeat} fresh processes)")
    for label, argv in cases:
        times = wall_times([str(SCRIPT), *argv], args.repeat)
        print(f"corevital {label:<48} {statistics.median(times):8.0f} {min(times):8.0f} {max(times):8.0f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
