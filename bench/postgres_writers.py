"""Many processes writing to one PostgreSQL store at once: nothing lost, nothing duplicated.

``--processes`` processes (default 8) each write ``--runs`` reports (default 250) to one store at
the same moment, while this process follows the store (``follow(after)``, as ``corevital runs -f``
and the server's event feed do). The reports are copies of the small golden report
(tests/data/golden_report_small.json) with new trace ids: no model runs, so the figure is the
store's. ``--rewrites N`` has each process write its first N reports a second time (idempotent
writes: stored once, keeping their seq). Then the store is counted: rows, distinct trace ids,
distinct seqs and the largest seq must all equal the number of reports, and the follower must
have seen each once, in seq order.

Without ``--url`` a PostgreSQL server of the installed Debian package is started for the run in a
temporary directory (with PostgreSQL's durable defaults: fsync and synchronous commit on) and
removed afterwards; with ``--url`` the store there must be empty.

    .venv/bin/python bench/postgres_writers.py [--processes 8] [--runs 250] [--rewrites 0] [--url URL]

Prints one JSON object: the counts, the wall time and the writes per second; exits 1 when a
report was lost or duplicated.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.support.postgres import PostgresServer, concurrent_writes  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--processes", type=int, default=8)
    parser.add_argument("--runs", type=int, default=250, help="Reports each process writes.")
    parser.add_argument("--rewrites", type=int, default=0, help="Reports each process writes twice.")
    parser.add_argument("--url", help="An empty PostgreSQL database (default: a temporary server).")
    args = parser.parse_args(argv)
    server = None
    url = args.url
    if url is None:
        server = PostgresServer.from_installed(durable=True)
        if server is None:
            print(
                "PostgreSQL is not installed: apt-get install -y postgresql, or pass --url", file=sys.stderr
            )
            return 2
        server.start()
        url = server.create_database()
    try:
        result = concurrent_writes(url, args.processes, args.runs, rewrites_each=args.rewrites)
    finally:
        if server is not None:
            server.stop()
    problems = result.problems()
    print(
        json.dumps(
            {
                "processes": result.processes,
                "runs_each": result.runs_each,
                "rewrites_each": result.rewrites_each,
                "expected": result.expected,
                "stored": result.stored,
                "distinct_trace_ids": result.distinct_trace_ids,
                "distinct_seqs": result.distinct_seqs,
                "max_seq": result.max_seq,
                "followed": len(result.followed),
                "wall_s": round(result.wall_s, 3),
                "writes_per_s": round(
                    result.processes * (result.runs_each + result.rewrites_each) / result.wall_s
                ),
                "cpus": os.cpu_count(),
                "machine": platform.processor() or platform.machine(),
                "problems": problems,
            },
            indent=2,
        )
    )
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
