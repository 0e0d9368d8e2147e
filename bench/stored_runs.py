"""Wall time of ``corevital runs`` and ``corevital show`` on a 10,000-run store, each in a fresh process.

Every command runs as a user types it (the ``corevital`` script of this Python environment, output
to a pipe, or to a pseudo-terminal where the label says so), once to warm the file cache and then
``--repeat`` times; the figures are the median, min and max wall time of the whole process, start
to exit, and the median CPU time (user + system) of the process, which depends less on what else
the machine runs. The package's bytecode
is compiled first, as ``pip install`` does (with ``PYTHONDONTWRITEBYTECODE`` set and no
``__pycache__``, every start would compile CoreVital's modules again). The store comes from
``bench/make_store.py``.

    .venv/bin/python bench/stored_runs.py [--db .bench-out/stored-runs/store-10k.db] [--repeat 7]

Acceptance (issue 14): ``runs`` first page < 300 ms, ``show`` < 200 ms.
"""

from __future__ import annotations

import argparse
import compileall
import os
import platform
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import corevital
from corevital.sinks.base import TraceQuery
from corevital.sinks.sqlite import SQLiteStore

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DB = ROOT / ".bench-out" / "stored-runs" / "store-10k.db"
SCRIPT = Path(sys.executable).with_name("corevital")


def timed_run(command: list[str], *, tty: bool = False) -> tuple[float, float]:
    """Wall and CPU (user + system) milliseconds of one run of ``command`` in a fresh process,
    its output to a pipe, or with ``tty`` to a pseudo-terminal (colour, as a person sees it)."""
    master, slave = os.openpty() if tty else (-1, -1)
    started = time.perf_counter()
    stdout = slave if tty else subprocess.DEVNULL
    process = subprocess.Popen(command, stdout=stdout, stderr=subprocess.DEVNULL)
    drain = None
    if tty:
        os.close(slave)
        drain = threading.Thread(target=_drain, args=(master,))
        drain.start()
    _, status, usage = os.wait4(process.pid, 0)
    wall = (time.perf_counter() - started) * 1000
    if drain is not None:
        drain.join()
        os.close(master)
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed with exit code {process.returncode}")
    return wall, (usage.ru_utime + usage.ru_stime) * 1000


def _drain(fd: int) -> None:
    try:
        while os.read(fd, 65536):
            pass
    except OSError:  # EIO once the terminal's last writer is gone
        pass


def times(command: list[str], repeat: int, *, tty: bool = False) -> tuple[list[float], list[float]]:
    """Wall and CPU milliseconds of each of ``repeat`` runs of ``command`` (after one warm-up run)."""
    timed_run(command, tty=tty)
    runs = [timed_run(command, tty=tty) for _ in range(repeat)]
    return [wall for wall, _ in runs], [cpu for _, cpu in runs]


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
    package = Path(corevital.__file__).parent
    compileall.compile_dir(package, quiet=1)  # as installed: pip writes the bytecode at install time
    db = str(args.db)
    cases = [
        ("runs (first page, to a terminal)", ["runs", "--db", db]),
        (f"show {full.trace_id[:8]} (full capture, to a terminal)", ["show", full.trace_id[:8], "--db", db]),
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
    print(f"load average before: {' '.join(f'{load:.2f}' for load in os.getloadavg())}")
    print(f"{'':<58} {'wall time (ms)':^26}  {'CPU time (ms)':>13}")
    print(f"{'command':<58} {'median':>8} {'min':>8} {'max':>8}  {'median':>13}")
    for label, argv in cases:
        wall, cpu = times([str(SCRIPT), *argv], args.repeat, tty="terminal" in label)
        print(
            f"corevital {label:<48} {statistics.median(wall):8.0f} {min(wall):8.0f} {max(wall):8.0f}"
            f"  {statistics.median(cpu):13.0f}"
        )
    print(f"({args.repeat} fresh processes each, after one warm-up run)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
