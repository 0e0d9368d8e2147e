"""The default report store: one SQLite file (``<out>/corevital.db``).

One row per report in the ``reports`` table: the indexed scalars of
:class:`~corevital.sinks.base.TraceRow` and the full report JSON, zlib-compressed, in
``report_zlib``. The database runs in WAL mode with a busy timeout and every write is one short
transaction, so several processes can write at once without losing reports. Opening, identity
checks and the migration chain are in :mod:`corevital.sinks.sqlite_schema`.
"""

from __future__ import annotations

import builtins
import os
import queue
import sqlite3
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from corevital.closing import ClosesOnExit
from corevital.errors import StoreError
from corevital.report.limits import MAX_REPORT_BYTES
from corevital.report.timestamps import epoch_ms
from corevital.sinks.base import (
    MAX_PAGE_SIZE,
    ModelAggregate,
    Page,
    SortOrder,
    TraceQuery,
    TraceRow,
    ambiguous_prefix_message,
)
from corevital.sinks.encoded import EncodedReport, parse_stored, stored_json_text
from corevital.sinks.rows import (
    aggregate_key,
    aggregate_of,
    make_page,
    order_aggregates,
    order_clause,
    page_where,
    prefix_range,
)
from corevital.sinks.sqlite_schema import (
    DB_FILE_NAME,
    FLAG_COLUMNS,
    REPORT_COLUMNS,
    RISK_SORT_SQL,
    open_database,
    open_database_read_only,
    repair_sidecars,
)

if TYPE_CHECKING:
    from corevital.report.schema import Report


_INSERT = (
    f"INSERT INTO reports ({', '.join(REPORT_COLUMNS)}, report_zlib, seq) "
    f"VALUES ({', '.join('?' for _ in REPORT_COLUMNS)}, ?, "
    f"(SELECT coalesce(max(seq), 0) + 1 FROM reports)) "
    f"ON CONFLICT(trace_id) DO UPDATE SET "
    + ", ".join(f"{column} = excluded.{column}" for column in (*REPORT_COLUMNS[1:], "report_zlib"))
)
_SELECT_ROWS = f"SELECT {', '.join(REPORT_COLUMNS)}, seq FROM reports"
_BOOL_INDEXES = tuple(REPORT_COLUMNS.index(column) for column in FLAG_COLUMNS)
SERVER_READERS = 4
"""The connections of the store ``corevital serve`` reads (see :class:`SQLiteStore`'s ``readers``)."""
READ_MMAP_BYTES = 1 << 30
"""How much of the file a read-only connection memory-maps (address space, not memory)."""
READ_CACHE_KIB = 8 * 1024
"""The page cache of a read-only connection."""
_PREFIX = "trace_id >= ? AND trace_id < ?"  # a range, so that the primary key index applies
_SORT_SQL = {SortOrder.TIME: "created_at_ms", SortOrder.RISK: RISK_SORT_SQL}


class SQLiteStore(ClosesOnExit):
    """A :class:`~corevital.sinks.base.ReportStore` in one SQLite file.

    Opening never overwrites a file that is not a CoreVital database: it raises
    :class:`~corevital.errors.StoreError` instead. A writer (the default) creates a missing
    database and migrates an older one; with ``read_only=True`` the file is opened with
    ``mode=ro`` and never created, written or migrated (a missing file, or a database of another
    version, is a StoreError); it then holds ``readers`` connections, all opened at once, so
    that as many reads (the server's worker threads) run side by side. Safe to share between
    threads. In a directory the reader cannot write, a WAL database is read ``immutable=1`` (see
    :func:`~corevital.sinks.sqlite_schema.open_database_read_only` for what that gives up).

    A stored report is inflated with a bound: one that would take more than ``max_report_bytes``
    (256 MB by default) is refused with a :class:`~corevital.errors.ReportError`, as is a cell that
    holds anything but a compressed report.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        read_only: bool = False,
        readers: int = 1,
        max_report_bytes: int = MAX_REPORT_BYTES,
    ) -> None:
        self.path = Path(path)
        self.read_only = read_only
        self.max_report_bytes = max_report_bytes
        self._conn: sqlite3.Connection | None = (
            _reader(open_database_read_only(self.path)) if read_only else open_database(self.path)
        )
        self._lock = threading.Lock()
        self._readers: builtins.list[sqlite3.Connection] = []
        self._free: queue.SimpleQueue[sqlite3.Connection] | None = None
        if read_only:  # a few connections, all opened now: concurrent reads never wait for one another
            assert self._conn is not None
            self._readers = [self._conn]
            self._readers += [_reader(open_database_read_only(self.path)) for _ in range(readers - 1)]
            self._free = queue.SimpleQueue()
            for conn in self._readers:
                self._free.put(conn)

    @classmethod
    def in_directory(cls, out_dir: str | Path) -> SQLiteStore:
        """The store at ``<out_dir>/corevital.db``."""
        return cls(Path(out_dir) / DB_FILE_NAME)

    def write(self, report: Report) -> str:
        """Store ``report`` (replacing a report with the same trace id, which keeps its ``seq``);
        returns ``<db path>#<trace id>``."""
        return self.write_encoded(EncodedReport(report))

    def write_encoded(self, encoded: EncodedReport) -> str:
        """:meth:`write`, reusing the report's encoding (shared with the other destinations)."""
        return self.write_batch_encoded([encoded])[0]

    def write_batch_encoded(self, batch: Sequence[EncodedReport]) -> builtins.list[str]:
        """Store every report of ``batch`` in one transaction: all of them or none, even when the
        process is killed half-way; their locations in order."""
        if self.read_only:
            raise StoreError(f"the SQLite store {self.path} is open read-only")
        if not batch:
            return []
        rows = [(*_row_values(encoded.row), encoded.zlib) for encoded in batch]
        try:
            with self._lock:
                try:
                    self._insert_all(rows)
                except sqlite3.OperationalError as error:
                    if not _is_read_only_error(error):
                        raise
                    # Opened while the file (or a -wal/-shm beside it) was read-only: once it is
                    # writable again, a fresh connection writes.
                    self._reopen_writer()
                    self._insert_all(rows)
        except sqlite3.Error as error:
            ids = ", ".join(encoded.report.trace_id for encoded in batch)
            noun = "report" if len(batch) == 1 else "reports"
            raise StoreError(f"cannot write {noun} {ids} to {self.path}: {error}") from None
        return [f"{self.path}#{encoded.report.trace_id}" for encoded in batch]

    def _insert_all(self, rows: builtins.list[tuple[object, ...]]) -> None:
        """Insert ``rows`` (the lock held): one statement in autocommit, several in one transaction."""
        conn = self._connection()
        if len(rows) == 1:
            conn.execute(_INSERT, rows[0])
            return
        conn.execute("BEGIN IMMEDIATE")
        try:
            for values in rows:  # one at a time: each row's seq reads the rows before it
                conn.execute(_INSERT, values)
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    def _reopen_writer(self) -> None:
        """Close the connection and open a new one (the lock held), leftover read-only sidecars repaired."""
        if self._conn is None or not os.access(self.path, os.W_OK):
            raise StoreError(f"cannot write to {self.path}: the database file is read-only")
        repair_sidecars(self.path)
        self._conn.close()
        self._conn = None
        self._conn = open_database(self.path)

    def get(self, trace_id: str) -> Report | None:
        """The report with this trace id (or a unique prefix of it), or ``None``."""
        found = self.resolve(trace_id)
        if found is None:
            return None
        text = self._blob_text(found)
        return None if text is None else parse_stored(text, f"{self.path}#{found}")

    def resolve(self, trace_id: str) -> str | None:
        """The full trace id of this id or unique prefix, or ``None`` (StoreError when ambiguous)."""
        if self.contains(trace_id):
            return trace_id
        if not trace_id:
            return None
        matches = self._query(f"SELECT trace_id FROM reports WHERE {_PREFIX} LIMIT 2", prefix_range(trace_id))
        if len(matches) > 1:
            raise StoreError(ambiguous_prefix_message(trace_id, self._count_prefix(trace_id)))
        return str(matches[0][0]) if matches else None

    def get_json(self, trace_id: str) -> str | None:
        """The stored report JSON text for exactly this trace id, not parsed; ``None`` if absent."""
        return self._blob_text(trace_id)

    def contains(self, trace_id: str) -> bool:
        """Whether exactly this trace id is stored."""
        return bool(self._query("SELECT 1 FROM reports WHERE trace_id = ?", (trace_id,)))

    def list(self, query: TraceQuery | None = None) -> builtins.list[TraceRow]:
        """Index rows matching ``query``, in its order."""
        query = query or TraceQuery()
        where, params = _where(query)
        limit = -1 if query.limit is None else query.limit
        sql = f"{_SELECT_ROWS}{where} ORDER BY {order_clause(query, _SORT_SQL)} LIMIT ? OFFSET ?"
        return [_row_from_db(values) for values in self._query(sql, (*params, limit, query.offset))]

    def count(self, query: TraceQuery | None = None) -> int:
        """Number of reports matching ``query`` (order, limit and offset aside)."""
        where, params = _where(query or TraceQuery())
        rows = self._query(f"SELECT count(*) FROM reports{where}", params)
        count: int = rows[0][0]
        return count

    def page(self, query: TraceQuery | None = None, cursor: str | None = None) -> Page:
        """One page of matching rows after ``cursor`` (see :meth:`ReportStore.page`)."""
        query = query or TraceQuery()
        size = query.page_size()
        where, params, offset = page_where(query, cursor, *_where(query), _SORT_SQL, "?")
        sql = f"{_SELECT_ROWS}{where} ORDER BY {order_clause(query, _SORT_SQL)} LIMIT ? OFFSET ?"
        rows = [_row_from_db(values) for values in self._query(sql, (*params, size + 1, offset))]
        return make_page(query, rows, size)

    def aggregate(
        self, query: TraceQuery | None = None, *, by: str = "model"
    ) -> builtins.list[ModelAggregate]:
        """Per-model (or per-prompt-hash) statistics of the matching reports."""
        key = aggregate_key(by)
        where, params = _where(query or TraceQuery())
        flag_sums = ", ".join(f"sum({flag} = 1)" for flag in FLAG_COLUMNS)
        totals = self._query(
            f"SELECT {key}, count(*), sum(generated_tokens), {flag_sums} FROM reports{where} GROUP BY {key}",
            params,
        )
        values: dict[str, tuple[builtins.list[float], builtins.list[float | None]]] = {}
        sql = f"SELECT {key}, risk_score, mean_entropy FROM reports{where}"
        for group, risk, entropy in self._query(sql, params):
            risks, entropies = values.setdefault(group, ([], []))
            if risk is not None:
                risks.append(risk)
            entropies.append(entropy)
        return order_aggregates(
            aggregate_of(
                group,
                runs=runs,
                risks=values[group][0],
                flag_counts=dict(zip(FLAG_COLUMNS, (count or 0 for count in flags), strict=True)),
                entropies=values[group][1],
                generated_tokens=tokens or 0,
            )
            for group, runs, tokens, *flags in totals
        )

    def follow(self, after: int | None) -> tuple[builtins.list[TraceRow], int]:
        """Rows stored with ``seq > after``, oldest first (see :meth:`ReportStore.follow`)."""
        if after is None:
            last: int = self._query("SELECT coalesce(max(seq), 0) FROM reports")[0][0]
            return [], last
        sql = f"{_SELECT_ROWS} WHERE seq > ? ORDER BY seq LIMIT ?"
        rows = [_row_from_db(values) for values in self._query(sql, (after, MAX_PAGE_SIZE))]
        return rows, rows[-1].seq if rows else after

    def close(self) -> None:
        """Close the connections; later calls raise :class:`~corevital.errors.StoreError`."""
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None
            for conn in self._readers[1:]:
                conn.close()
            self._readers.clear()

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            raise StoreError(f"the SQLite store {self.path} is closed")
        return self._conn

    def _query(self, sql: str, params: Sequence[Any] = ()) -> builtins.list[tuple[Any, ...]]:
        try:
            if self._free is not None:
                return self._read(self._free, sql, params)
            with self._lock:
                return self._connection().execute(sql, params).fetchall()
        except sqlite3.Error as error:
            raise StoreError(f"cannot read {self.path}: {error}") from None

    def _read(
        self, free: queue.SimpleQueue[sqlite3.Connection], sql: str, params: Sequence[Any]
    ) -> builtins.list[tuple[Any, ...]]:
        conn = free.get()  # waits while every reader is busy
        try:
            self._connection()  # StoreError once closed
            return conn.execute(sql, params).fetchall()
        finally:
            free.put(conn)

    def _count_prefix(self, prefix: str) -> int:
        rows = self._query(f"SELECT count(*) FROM reports WHERE {_PREFIX}", prefix_range(prefix))
        count: int = rows[0][0]
        return count

    def _blob_text(self, trace_id: str) -> str | None:
        rows = self._query("SELECT report_zlib FROM reports WHERE trace_id = ?", (trace_id,))
        if not rows:
            return None
        return stored_json_text(
            rows[0][0], f"{self.path}#{trace_id}: the stored report", self.max_report_bytes
        )


def _is_read_only_error(error: sqlite3.OperationalError) -> bool:
    code = getattr(error, "sqlite_errorcode", None)
    return code is not None and code & 0xFF == sqlite3.SQLITE_READONLY


def _row_values(row: TraceRow) -> tuple[Any, ...]:
    return tuple(getattr(row, column) for column in REPORT_COLUMNS)


def _row_from_db(values: Sequence[Any]) -> TraceRow:
    """A row of ``_SELECT_ROWS`` (columns in :class:`TraceRow` field order), flags made booleans."""
    row = list(values)
    for index in _BOOL_INDEXES:
        if row[index] is not None:
            row[index] = bool(row[index])
    return TraceRow(*row)


def _reader(conn: sqlite3.Connection) -> sqlite3.Connection:
    """``conn`` set up for reading: the file memory-mapped (no copy per page read) and a larger
    page cache, so that scanning an index and the rows it points at costs little."""
    conn.execute(f"PRAGMA mmap_size = {READ_MMAP_BYTES}").fetchall()
    conn.execute(f"PRAGMA cache_size = -{READ_CACHE_KIB}").fetchall()
    return conn


def _where(query: TraceQuery) -> tuple[str, tuple[Any, ...]]:
    clauses: builtins.list[str] = []
    params: builtins.list[Any] = []
    # Sorted by risk, a risk bound is put on the sort expression, so that the risk index's range
    # applies (the same rows: a row without a score matches no bound, and is excluded explicitly).
    # A time bound then stays off the time index (unary +): the risk index, which holds the time
    # too, is walked in order instead of sorting every run of the time range.
    by_risk = query.sort is SortOrder.RISK
    risk = RISK_SORT_SQL if by_risk else "risk_score"
    time = "+created_at_ms" if by_risk else "created_at_ms"
    for column, value, operator in (
        ("model_id", query.model_id, "="),
        ("prompt_hash", query.prompt_hash, "="),
        (risk, query.min_risk, ">="),
        (risk, query.max_risk, "<="),
        (time, None if query.since is None else epoch_ms(query.since), ">="),
        (time, None if query.until is None else epoch_ms(query.until), "<"),
    ):
        if value is not None:
            clauses.append(f"{column} {operator} ?")
            params.append(value)
    if by_risk and (query.min_risk is not None or query.max_risk is not None):
        clauses.append("risk_score IS NOT NULL")
    clauses.extend(f"{flag.value} = 1" for flag in sorted(query.flags))  # literal 1: partial indexes apply
    where = f" WHERE {' AND '.join(clauses)}" if clauses else ""
    return where, tuple(params)
