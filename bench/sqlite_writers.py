"""Many processes writing to one SQLite store at once: nothing lost, nothing duplicated.

``--processes`` processes (default 8) each write ``--runs`` reports (default 200) into one SQLite
file at the same moment (released together by a barrier). The reports are copies of the small
golden report (tests/data/golden_report_small.json) with new trace ids: no model runs, so the
figure is the store's. Then the file is counted: rows, distinct trace ids and distinct seqs must
all equal the number of reports, and ``PRAGMA integrity_check`` must say ok.

    .venv/bin/python bench/sqlite_writers.py [--processes 8] [--runs 200] [--dir DIR]

Prints one JSON object; exits 1 when a report was lost or duplicated.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.support.sqlite_writers import concurrent_sqlite_writes  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--processes", type=int, default=8)
    parser.add_argument("--runs", type=int, default=200, help="Reports each process writes.")
    parser.add_argument("--dir", help="Where the database is made (default: a temporary directory).")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(dir=args.dir) as directory:
        result = concurrent_sqlite_writes(Path(directory) / "corevital.db", args.processes, args.runs)
    print(json.dumps({**result.as_dict(), "machine": f"{platform.machine()}, {platform.python_version()}"}))
    return 0 if result.ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
