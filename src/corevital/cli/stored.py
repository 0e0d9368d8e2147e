"""``corevital runs``, ``show``, ``compare`` and ``export``: reading the stored runs back.

All four sit on the :class:`~corevital.sinks.base.ReportStore` read interface (the HTTP server
uses the same) and on :mod:`corevital.views`. The store is ``--db PATH`` (default
``runs/corevital.db``) or ``--db postgresql://...``: opened with a writer when possible, so that a
database of an older CoreVital is upgraded, else read-only. ``--json`` prints what a script needs,
on every command.

``runs`` stays fast: this module imports no pydantic report model and no numpy; ``show`` reads the
stored JSON document directly.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from collections.abc import Callable
from contextlib import closing
from dataclasses import asdict
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from corevital.errors import InputError, StoreError
from corevital.sinks.rows import MAX_PAGE_SIZE, HealthFlag, SortOrder, TraceQuery
from corevital.sinks.sqlite_schema import DEFAULT_DB_PATH

if TYPE_CHECKING:
    from corevital.sinks.base import ReportStore

DEFAULT_LIMIT = 20
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def open_store(db: str) -> ReportStore:
    """The store at ``db``: a writer when possible (upgrading an older database), else read-only.

    ``db`` is a SQLite file path or a ``postgresql://`` URL. A missing file, or a PostgreSQL
    database without a store, is a StoreError (nothing is created by reading). Close it with
    ``closing`` (or ``with``).
    """
    from corevital.sinks.open import is_postgres_url, open_location

    if is_postgres_url(db):
        return open_location(db, create=False)
    path = Path(db)
    if not path.exists():
        raise StoreError(
            f"no CoreVital database at {path} (store runs with `corevital run`, or pass --db PATH)"
        )
    try:
        return open_location(path)
    except StoreError as writer_error:
        try:
            return open_location(path, read_only=True)
        except StoreError:
            raise writer_error from None


def parse_since(text: str, now: datetime | None = None) -> datetime:
    """``2h``, ``30m``, ``7d``, ``1w``, ``45s`` before ``now``, or an ISO date or date-time (UTC if naive)."""
    match = _DURATION.match(text)
    if match:
        amount, unit = float(match.group(1)), match.group(2)
        return (now or datetime.now(UTC)) - timedelta(**{_UNITS[unit]: amount})
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise InputError(
            f"cannot read the time {text!r}: use a duration (30m, 2h, 7d) or an ISO date (2026-03-01)"
        ) from None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def parse_flag(text: str) -> HealthFlag:
    """A health flag by value (``nan_detected``) or short name (``nan``); InputError otherwise."""
    try:
        return HealthFlag.from_name(text)
    except StoreError as error:
        raise InputError(str(error)) from None


def build_query(args: argparse.Namespace, *, limit: int | None) -> TraceQuery:
    """The :class:`TraceQuery` of the filter flags in ``args``."""
    return TraceQuery(
        model_id=args.model,
        prompt_hash=args.prompt_hash,
        min_risk=args.min_risk,
        max_risk=args.max_risk,
        flags=frozenset(parse_flag(name) for name in args.flag or ()),
        since=None if args.since is None else parse_since(args.since),
        until=None if args.until is None else parse_since(args.until),
        limit=limit,
        sort=SortOrder(getattr(args, "sort", "time")),
        ascending=getattr(args, "ascending", False),
    )


def _shown(db: str) -> str:
    """``--db`` as messages show it (a URL without its password)."""
    from corevital.sinks.open import redact_url

    return redact_url(db)


def _print_json(document: Any) -> None:
    print(json.dumps(document, ensure_ascii=False, indent=2))


FOLLOW_INTERVAL_S = 1.0


def cmd_runs(args: argparse.Namespace) -> int:
    if not 1 <= args.limit <= MAX_PAGE_SIZE:
        raise InputError(f"--limit must be between 1 and {MAX_PAGE_SIZE}")
    query = build_query(args, limit=args.limit)
    if args.follow:
        return _follow(args, query)
    with closing(open_store(args.db)) as store:
        page = store.page(query, args.cursor)
        total = store.count(query)
    if args.json:
        _print_json(
            {"total": total, "runs": [asdict(row) for row in page.rows], "next_cursor": page.next_cursor}
        )
        return 0
    from corevital.views.terminal import make_console, print_lines, runs_table

    console = make_console()
    if not page.rows:
        console.print("No stored runs match." if total == 0 else "No more runs.")
        return 0
    print_lines(console, runs_table(page.rows, total=total))
    if page.next_cursor is not None:
        print(f"More: add --cursor {page.next_cursor}", file=sys.stderr)
    return 0


def _follow(args: argparse.Namespace, query: TraceQuery) -> int:
    """The newest page, then every matching run as it is stored (JSON: one line per new run), until Ctrl-C."""
    import time

    from rich.text import Text

    from corevital.views.terminal import make_console, print_lines, runs_table

    console = make_console()
    with closing(open_store(args.db)) as store:
        _, last = store.follow(None)  # before the first page: a run stored meanwhile is not lost
        if not args.json:
            newest = store.list(query)
            print_lines(console, runs_table(list(reversed(newest))) if newest else Text("Waiting for runs…"))
        try:
            while True:
                time.sleep(FOLLOW_INTERVAL_S)
                rows, last = store.follow(last)
                rows = [row for row in rows if query.matches(row)]
                if args.json:
                    for row in rows:
                        print(json.dumps(asdict(row), ensure_ascii=False), flush=True)
                elif rows:
                    print_lines(console, runs_table(rows, header=False))
        except KeyboardInterrupt:
            return 0


def _load_document(store: ReportStore, db: str, trace_id: str) -> dict[str, Any]:
    found = store.resolve(trace_id)
    text = None if found is None else store.get_json(found)
    if text is None:
        raise StoreError(f"no stored run with trace id {trace_id!r} in {_shown(db)}")
    document: dict[str, Any] = json.loads(text)
    return document


def cmd_show(args: argparse.Namespace) -> int:
    with closing(open_store(args.db)) as store:
        found = store.resolve(args.trace)
        text = None if found is None else store.get_json(found)
    if text is None:
        raise StoreError(f"no stored run with trace id {args.trace!r} in {_shown(args.db)}")
    if args.json:
        sys.stdout.write(text.rstrip("\n") + "\n")
        return 0
    from corevital.views.digest import digest_document
    from corevital.views.terminal import make_console, show_run

    make_console().print(show_run(digest_document(json.loads(text))))
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    if args.traces:
        if args.by is not None:
            raise InputError("give trace ids or --by, not both")
        if len(args.traces) < 2:
            raise InputError("compare needs at least two trace ids (or --by model|prompt for a summary)")
        return _compare_traces(args)
    from corevital.views.compare import group_summary

    by = args.by or "model"
    with closing(open_store(args.db)) as store:
        summary = group_summary(store.aggregate(build_query(args, limit=None), by=by), by, store)
    if args.json:
        _print_json(summary.to_json())
        return 0
    from corevital.views.terminal import group_table, make_console, print_lines

    console = make_console()
    if not summary.groups:
        console.print("No stored runs match.")
        return 0
    print_lines(console, group_table(summary))
    return 0


def _compare_traces(args: argparse.Namespace) -> int:
    from corevital.views.compare import compare_runs
    from corevital.views.digest import digest_document

    with closing(open_store(args.db)) as store:
        documents = [_load_document(store, args.db, trace) for trace in args.traces]
    comparison = compare_runs([digest_document(document) for document in documents])
    if args.json:
        _print_json(comparison.to_json())
        return 0
    from corevital.views.terminal import comparison_table, make_console

    make_console().print(comparison_table(comparison))
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from corevital.views.export import export_runs, text_stream

    if args.limit is not None and args.limit < 1:
        raise InputError("--limit must be at least 1")
    if args.format == "jsonl" and args.rows == "step":
        raise InputError("--rows step needs --format csv or parquet (jsonl exports whole reports)")
    if args.format == "parquet":
        from corevital.views.export import require_pyarrow

        require_pyarrow()
    query = build_query(args, limit=args.limit)
    with closing(open_store(args.db)) as store:
        if args.out == "-":
            stream = text_stream(sys.stdout.buffer)
            count = export_runs(store, query, fmt=args.format, rows=args.rows, out=stream)
            stream.detach()
        else:
            count = export_runs(store, query, fmt=args.format, rows=args.rows, out=Path(args.out))
    what = "reports" if args.format == "jsonl" else f"{args.rows} rows"
    if args.json:
        summary = {"written": count, "records": what.split()[0], "format": args.format, "out": args.out}
        print(json.dumps(summary), file=sys.stderr if args.out == "-" else sys.stdout)
    elif args.out != "-":
        print(f"{count} {what} written to {args.out}", file=sys.stderr)
    return 0


def _add_db(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--db",
        default=DEFAULT_DB_PATH,
        metavar="PATH|URL",
        help=f"The store: a SQLite file (default {DEFAULT_DB_PATH}) or a postgresql:// URL.",
    )
    parser.add_argument("--json", action="store_true", help="Print JSON for scripts instead of text.")


def _add_filters(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", metavar="M", help="Only runs of this model id.")
    parser.add_argument(
        "--prompt-hash",
        "--prompt_hash",
        dest="prompt_hash",
        metavar="H",
        help="Only runs with this prompt hash.",
    )
    parser.add_argument(
        "--since",
        metavar="2h|DATE",
        help="Only runs at or after: 30m, 2h, 7d, 1w, or an ISO date/time (UTC).",
    )
    parser.add_argument(
        "--until", metavar="2h|DATE", help="Only runs before: a duration ago, or an ISO date/time."
    )
    parser.add_argument(
        "--min-risk", "--min_risk", dest="min_risk", type=float, metavar="X", help="Only runs with risk >= X."
    )
    parser.add_argument(
        "--max-risk", "--max_risk", dest="max_risk", type=float, metavar="X", help="Only runs with risk <= X."
    )
    names = ", ".join(flag.short_name for flag in HealthFlag)
    parser.add_argument(
        "--flag",
        action="append",
        metavar="NAME",
        help=f"Only runs with this health flag set (repeatable: all must hold): {names}.",
    )


def _add_order(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--sort",
        choices=[order.value for order in SortOrder],
        default="time",
        help="Order by time (default) or risk.",
    )
    parser.add_argument("--asc", dest="ascending", action="store_true", help="Oldest (or least risky) first.")


EXIT_BROKEN_PIPE = 141
"""The exit code of a command whose reader went away (``corevital runs | head``), as 128 + SIGPIPE."""


def _until_the_reader_leaves(
    handler: Callable[[argparse.Namespace], int],
) -> Callable[[argparse.Namespace], int]:
    """``handler``, ending quietly when stdout's reader closes the pipe (as ``git log | head`` does)."""

    def run(args: argparse.Namespace) -> int:
        try:
            return handler(args)
        except BrokenPipeError:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())  # nothing more reaches the closed pipe at exit
            return EXIT_BROKEN_PIPE

    return run


def configure(name: str, parser: argparse.ArgumentParser) -> None:
    """The arguments and handler of ``runs``, ``show``, ``compare`` or ``export``."""
    _configure(name, parser)
    parser.set_defaults(handler=_until_the_reader_leaves(parser.get_default("handler")))


def _configure(name: str, parser: argparse.ArgumentParser) -> None:
    if name == "runs":
        _add_db(parser)
        _add_filters(parser)
        _add_order(parser)
        parser.add_argument(
            "--limit",
            type=int,
            default=DEFAULT_LIMIT,
            metavar="N",
            help=f"Runs per page (default {DEFAULT_LIMIT}, at most {MAX_PAGE_SIZE}).",
        )
        parser.add_argument("--cursor", metavar="C", help="Continue after the page that printed this cursor.")
        parser.add_argument(
            "--follow",
            "-f",
            action="store_true",
            help="Keep printing runs as they are stored, until Ctrl-C (with --json: one line per new run).",
        )
        parser.set_defaults(handler=cmd_runs)
    elif name == "show":
        parser.add_argument("trace", metavar="TRACE", help="Trace id, or a unique prefix of it.")
        _add_db(parser)
        parser.set_defaults(handler=cmd_show)
    elif name == "compare":
        parser.add_argument(
            "traces", nargs="*", metavar="TRACE", help="Two or more trace ids (or unique prefixes)."
        )
        parser.add_argument(
            "--by",
            choices=["model", "prompt"],
            help="Summarise the runs by model (the default without ids) or prompt hash.",
        )
        _add_db(parser)
        _add_filters(parser)
        parser.set_defaults(handler=cmd_compare)
    elif name == "export":
        _add_db(parser)
        _add_filters(parser)
        _add_order(parser)
        parser.add_argument(
            "--format",
            choices=["jsonl", "csv", "parquet"],
            required=True,
            help="jsonl: whole reports; csv, parquet: one row per run or step.",
        )
        parser.add_argument(
            "--rows",
            choices=["run", "step"],
            default="run",
            help="One row per run (default) or per generated step (csv, parquet).",
        )
        parser.add_argument(
            "--out", required=True, metavar="FILE", help="Output file; - for stdout (jsonl, csv)."
        )
        parser.add_argument(
            "--limit", type=int, metavar="N", help="At most N runs (default: all that match)."
        )
        parser.set_defaults(handler=cmd_export)
    else:
        raise ValueError(f"corevital.cli.stored does not configure {name!r}")
