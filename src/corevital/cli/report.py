"""``corevital report TRACE --html OUT.html``: one run as a self-contained HTML file.

The run comes from a store (``--db``: a SQLite file or a PostgreSQL URL; a unique trace-id prefix
is enough) or from a report JSON file (``--report``, e.g. one written by ``--sink local``). The
file is written next to its final name and renamed into place, so a reader never sees half a
report.
"""

from __future__ import annotations

import argparse
import json
from contextlib import closing
from pathlib import Path

from corevital.errors import InputError, StoreError
from corevital.report.schema import Report
from corevital.sinks.sqlite_schema import DEFAULT_DB_PATH


def _load(args: argparse.Namespace) -> Report:
    if args.report is not None:
        if args.trace is not None:
            raise InputError("give either a TRACE id (from --db) or --report FILE, not both")
        from corevital.report.encoding import load_report

        return load_report(args.report)
    if args.trace is None:
        raise InputError("no run given: pass a TRACE id (or a unique prefix) or --report FILE.json")
    from corevital.sinks.open import is_postgres_url, open_location, redact_url

    if not is_postgres_url(args.db) and not Path(args.db).is_file():
        raise StoreError(
            f"no CoreVital database at {args.db}: pass --db PATH or URL (default {DEFAULT_DB_PATH})"
        )
    with closing(open_location(args.db, read_only=True)) as store:
        report = store.get(args.trace)
    if report is None:
        raise StoreError(f"no stored run matches {args.trace!r} in {redact_url(args.db)}")
    return report


def write_html(report: Report, out: str | Path) -> tuple[Path, int]:
    """Write the HTML report of ``report`` to ``out`` (parents created); returns (path, bytes)."""
    from corevital.sinks.local import write_atomically
    from corevital.views.html_report import render_html

    path = Path(out)
    if path.is_dir():
        raise InputError(f"{path} is a directory: pass a file name such as {path / 'report.html'}")
    data = render_html(report).encode("utf-8")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomically(path, data)
    except OSError as error:
        raise InputError(f"cannot write {path}: {error.strerror or error}") from None
    return path, len(data)


def cmd_report(args: argparse.Namespace) -> int:
    report = _load(args)
    path, size = write_html(report, args.html)
    if args.json:
        print(json.dumps({"trace_id": report.trace_id, "path": str(path), "bytes": size}))
    else:
        print(f"HTML report of {report.trace_id}: {path} ({size / 1024:.0f} KiB)")
    return 0


def configure(name: str, parser: argparse.ArgumentParser) -> None:
    """The arguments and handler of ``report``."""
    parser.add_argument(
        "trace", nargs="?", metavar="TRACE", help="Trace id of a stored run, or a unique prefix."
    )
    parser.add_argument("--html", required=True, metavar="OUT.html", help="Where to write the HTML file.")
    parser.add_argument(
        "--db",
        default=DEFAULT_DB_PATH,
        metavar="PATH|URL",
        help=f"Store to read: a SQLite file (default {DEFAULT_DB_PATH}) or a postgresql:// URL.",
    )
    parser.add_argument(
        "--report", metavar="FILE.json", help="Read the run from a report JSON file instead of a store."
    )
    parser.add_argument("--json", action="store_true", help='Print {"trace_id", "path", "bytes"} as JSON.')
    parser.set_defaults(handler=cmd_report)
