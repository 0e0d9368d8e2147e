"""The sink protocols, the typed index of stored reports, and the in-memory store.

A :class:`Sink` persists reports (``write`` returns where the report went, ``close`` releases the
resources). A :class:`ReportStore` is a sink that can be queried back, the one read interface of
the CLI (``runs``, ``show``, ``compare``, ``export``) and the HTTP server: the SQLite store and
:class:`MemorySink` (for tests) implement it with the same semantics (a PostgreSQL store, not
written yet, would implement it too), which
:mod:`corevital.sinks.rows` states in Python (:meth:`TraceQuery.matches`, the sort order, the
keyset cursor, :func:`~corevital.sinks.rows.aggregate_rows`).
"""

from __future__ import annotations

import builtins
import threading
from dataclasses import replace
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from corevital.errors import StoreError
from corevital.sinks.rows import (
    MAX_PAGE_SIZE,
    HealthFlag,
    ModelAggregate,
    Page,
    SortOrder,
    TraceQuery,
    TraceRow,
    after_cursor,
    aggregate_key,
    aggregate_rows,
    decode_cursor,
    make_page,
    newest_first,
    sort_rows,
    trace_row_from_report,
)

if TYPE_CHECKING:
    from corevital.report.schema import Report
    from corevital.sinks.encoded import EncodedReport

__all__ = [
    "MAX_PAGE_SIZE",
    "HealthFlag",
    "MemorySink",
    "ModelAggregate",
    "Page",
    "ReportStore",
    "Sink",
    "SortOrder",
    "TraceQuery",
    "TraceRow",
    "ambiguous_prefix_message",
    "newest_first",
    "trace_row_from_report",
]


def ambiguous_prefix_message(prefix: str, matches: int) -> str:
    """The error message for a trace id prefix that matches more than one report."""
    return f"trace id prefix {prefix!r} matches {matches} reports; give more of the id"


@runtime_checkable
class Sink(Protocol):
    """Somewhere reports go."""

    def write(self, report: Report) -> str:
        """Persist ``report``; return where it went (a file path, or a database path and trace id)."""
        ...

    def close(self) -> None:
        """Release the sink's resources; further writes are errors."""
        ...


@runtime_checkable
class ReportStore(Sink, Protocol):
    """A sink whose reports can be read back, listed, paged, aggregated and followed.

    Rows come in the order of the query (:class:`TraceQuery`: newest first by default, ties by
    trace id). Every ``seq`` is unique within a store and increases in insertion order.
    """

    def get(self, trace_id: str) -> Report | None:
        """The report with this trace id (or a unique prefix of it), ``None`` if there is none.

        A prefix that matches several reports is a :class:`~corevital.errors.StoreError`.
        """
        ...

    def resolve(self, trace_id: str) -> str | None:
        """The full trace id of this id or unique prefix, ``None`` if none (StoreError if ambiguous)."""
        ...

    def get_json(self, trace_id: str) -> str | None:
        """The report JSON text exactly as stored, for exactly this trace id (no prefix, no parsing)."""
        ...

    def contains(self, trace_id: str) -> bool:
        """Whether a report with exactly this trace id is stored."""
        ...

    def list(self, query: TraceQuery | None = None) -> builtins.list[TraceRow]:
        """Index rows of the stored reports that match ``query``, in its order, limit and offset."""
        ...

    def count(self, query: TraceQuery | None = None) -> int:
        """How many stored reports match ``query`` (order, limit and offset aside)."""
        ...

    def page(self, query: TraceQuery | None = None, cursor: str | None = None) -> Page:
        """One page of matching rows in ``query``'s order, after ``cursor`` (keyset pagination).

        A page holds ``query.limit`` rows (``None``: :data:`MAX_PAGE_SIZE`; more is a StoreError);
        ``query.offset`` applies to the first page only (with a cursor it is ignored).
        ``next_cursor`` is an opaque string continuing after the page's last row, ``None`` when no
        row follows. Rows written meanwhile before the cursor's position are not seen, and no row is
        returned twice unless it is written again with another sort value meanwhile. A malformed
        cursor, or one of another sort order, is a StoreError.
        """
        ...

    def aggregate(
        self, query: TraceQuery | None = None, *, by: str = "model"
    ) -> builtins.list[ModelAggregate]:
        """Statistics per model id (``by="model"``) or prompt hash (``"prompt"``) of the matching rows.

        Order, limit and offset of ``query`` are ignored; groups come most runs first, ties by key.
        """
        ...

    def follow(self, after: int | None) -> tuple[builtins.list[TraceRow], int]:
        """Rows stored with ``seq > after``, oldest first, at most :data:`MAX_PAGE_SIZE`.

        Returns the rows and the ``seq`` to pass next time (the last row's, else ``after``).
        ``after=None`` means "from now": no rows and the current last ``seq`` (0 when empty). A
        report written again under its trace id keeps its ``seq``, so it is not followed again.
        """
        ...


class MemorySink:
    """A :class:`ReportStore` in memory, for tests. Keeps the report objects themselves, not copies."""

    def __init__(self) -> None:
        self._reports: dict[str, Report] = {}
        self._rows: dict[str, TraceRow] = {}
        self._seq = 0
        self._lock = threading.Lock()

    @property
    def reports(self) -> builtins.list[Report]:
        """The stored reports in the order they were first written."""
        with self._lock:
            return builtins.list(self._reports.values())

    def write(self, report: Report) -> str:
        """Store ``report`` (replacing one with the same trace id); the location is ``memory#<id>``."""
        from corevital.sinks.encoded import EncodedReport

        return self.write_encoded(EncodedReport(report))

    def write_encoded(self, encoded: EncodedReport) -> str:
        """:meth:`write`, reusing the report's index row (shared with the other destinations)."""
        report, row = encoded.report, encoded.row
        with self._lock:
            previous = self._rows.get(report.trace_id)
            if previous is None:
                self._seq += 1
            seq = self._seq if previous is None else previous.seq
            self._reports[report.trace_id] = report
            self._rows[report.trace_id] = _with_seq(row, seq)
        return f"memory#{report.trace_id}"

    def get(self, trace_id: str) -> Report | None:
        """The report with this trace id or unique prefix, else ``None``."""
        found = self.resolve(trace_id)
        with self._lock:
            return None if found is None else self._reports[found]

    def resolve(self, trace_id: str) -> str | None:
        """The full id of this id or unique prefix, else ``None``."""
        with self._lock:
            if trace_id in self._reports:
                return trace_id
            found = [key for key in self._reports if key.startswith(trace_id)] if trace_id else []
        if len(found) > 1:
            raise StoreError(ambiguous_prefix_message(trace_id, len(found)))
        return found[0] if found else None

    def get_json(self, trace_id: str) -> str | None:
        """The report's JSON text (as the SQLite store writes it), for exactly this id."""
        from corevital.report.encoding import report_to_json

        with self._lock:
            report = self._reports.get(trace_id)
        return None if report is None else report_to_json(report)

    def contains(self, trace_id: str) -> bool:
        """Whether exactly this trace id is stored."""
        with self._lock:
            return trace_id in self._reports

    def list(self, query: TraceQuery | None = None) -> builtins.list[TraceRow]:
        """Matching rows in the query's order."""
        query = query or TraceQuery()
        rows = sort_rows(self._matching(query), query.sort, query.ascending)
        end = None if query.limit is None else query.offset + query.limit
        return rows[query.offset : end]

    def count(self, query: TraceQuery | None = None) -> int:
        """Number of matching rows."""
        return len(self._matching(query or TraceQuery()))

    def page(self, query: TraceQuery | None = None, cursor: str | None = None) -> Page:
        """One page of matching rows after ``cursor``."""
        query = query or TraceQuery()
        size = query.page_size()
        rows = sort_rows(self._matching(query), query.sort, query.ascending)
        if cursor is not None:
            position = decode_cursor(cursor, query)
            rows = [row for row in rows if after_cursor(row, query, position)]
        else:
            rows = rows[query.offset :]
        return make_page(query, rows[: size + 1], size)

    def aggregate(
        self, query: TraceQuery | None = None, *, by: str = "model"
    ) -> builtins.list[ModelAggregate]:
        """Per-model (or per-prompt) statistics of the matching rows."""
        aggregate_key(by)
        return aggregate_rows(self._matching(query or TraceQuery()), by)

    def follow(self, after: int | None) -> tuple[builtins.list[TraceRow], int]:
        """Rows written after position ``after``, oldest first."""
        with self._lock:
            rows = sorted(self._rows.values(), key=lambda row: row.seq)
        if after is None:
            return [], rows[-1].seq if rows else 0
        newer = [row for row in rows if row.seq > after][:MAX_PAGE_SIZE]
        return newer, newer[-1].seq if newer else after

    def close(self) -> None:
        """Nothing to release."""

    def _matching(self, query: TraceQuery) -> builtins.list[TraceRow]:
        with self._lock:
            return [row for row in self._rows.values() if query.matches(row)]


def _with_seq(row: TraceRow, seq: int) -> TraceRow:
    return replace(row, seq=seq)
