"""The default report store: one SQLite file (``<out>/corevital.db``).

One row per report in the ``reports`` table: the indexed scalars of
:class:`~corevital.sinks.base.TraceRow` and the full report JSON, zlib-compressed, in
``report_zlib``. The database runs in WAL mode with a busy timeout and every write is one short
transaction, so several processes can write at once without losing reports. Opening, identity
checks and the migration chain are in :mod:`corevital.sinks.sqlite_schema`.
"""

from __future__ import annotations

import builtins
import sqlite3
import threading
import zlib
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

from corevital.errors import ReportError, StoreError
from corevital.report.encoding import report_from_json, report_to_json
from corevital.report.schema import Report
from corevital.report.timestamps import epoch_ms
from corevital.sinks.base import TraceQuery, TraceRow, ambiguous_prefix_message, trace_row_from_report
from corevital.sinks.sqlite_schema import DB_FILE_NAME, FLAG_COLUMNS, REPORT_COLUMNS, open_database

ZLIB_LEVEL = 6

_INSERT = (
    f"INSERT INTO reports ({', '.join(REPORT_COLUMNS)}, report_zlib) "
    f"VALUES ({', '.join('?' for _ in REPORT_COLUMNS)}, ?) "
    f"ON CONFLICT(trace_id) DO UPDATE SET "
    + ", ".join(f"{column} = excluded.{column}" for column in (*REPORT_COLUMNS[1:], "report_zlib"))
)
_SELECT_ROWS = f"SELECT {', '.join(REPORT_COLUMNS)} FROM reports"
_BOOL_COLUMNS = frozenset(FLAG_COLUMNS)
_PREFIX = "trace_id >= ? AND trace_id < ?"  # a range, so that the primary key index applies


class SQLiteStore:
    """A :class:`~corevital.sinks.base.ReportStore` in one SQLite file.

    Opening never overwrites a file that is not a CoreVital database: it raises
    :class:`~corevital.errors.StoreError` instead. Safe to share between threads.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._conn: sqlite3.Connection | None = open_database(self.path)
        self._lock = threading.Lock()

    @classmethod
    def in_directory(cls, out_dir: str | Path) -> SQLiteStore:
        """The store at ``<out_dir>/corevital.db``."""
        return cls(Path(out_dir) / DB_FILE_NAME)

    def write(self, report: Report) -> str:
        """Store ``report`` (replacing a report with the same trace id); returns ``<db path>#<trace id>``."""
        row = trace_row_from_report(report)
        blob = zlib.compress(report_to_json(report).encode("utf-8"), ZLIB_LEVEL)
        values = (*_row_values(row), blob)
        try:
            with self._lock:
                self._connection().execute(_INSERT, values)
        except sqlite3.Error as error:
            raise StoreError(f"cannot write report {report.trace_id} to {self.path}: {error}") from None
        return f"{self.path}#{report.trace_id}"

    def get(self, trace_id: str) -> Report | None:
        """The report with this trace id (or a unique prefix of it), or ``None``."""
        rows = self._query("SELECT report_zlib FROM reports WHERE trace_id = ?", (trace_id,))
        if rows:
            return self._decode(trace_id, rows[0][0])
        if not trace_id:
            return None
        matches = self._query(
            f"SELECT trace_id FROM reports WHERE {_PREFIX} LIMIT 2", _prefix_range(trace_id)
        )
        if len(matches) > 1:
            raise StoreError(ambiguous_prefix_message(trace_id, self._count_prefix(trace_id)))
        return self.get(matches[0][0]) if matches else None

    def contains(self, trace_id: str) -> bool:
        """Whether exactly this trace id is stored."""
        return bool(self._query("SELECT 1 FROM reports WHERE trace_id = ?", (trace_id,)))

    def list(self, query: TraceQuery | None = None) -> builtins.list[TraceRow]:
        """Index rows matching ``query``, newest first."""
        query = query or TraceQuery()
        where, params = _where(query)
        limit = -1 if query.limit is None else query.limit
        sql = f"{_SELECT_ROWS}{where} ORDER BY created_at_ms DESC, trace_id LIMIT ? OFFSET ?"
        return [_row_from_db(values) for values in self._query(sql, (*params, limit, query.offset))]

    def count(self, query: TraceQuery | None = None) -> int:
        """Number of reports matching ``query`` (limit and offset aside)."""
        where, params = _where(query or TraceQuery())
        rows = self._query(f"SELECT count(*) FROM reports{where}", params)
        count: int = rows[0][0]
        return count

    def close(self) -> None:
        """Close the connection; later calls raise :class:`~corevital.errors.StoreError`."""
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    def __enter__(self) -> SQLiteStore:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            raise StoreError(f"the SQLite store {self.path} is closed")
        return self._conn

    def _query(self, sql: str, params: Sequence[Any] = ()) -> builtins.list[tuple[Any, ...]]:
        try:
            with self._lock:
                return self._connection().execute(sql, params).fetchall()
        except sqlite3.Error as error:
            raise StoreError(f"cannot read {self.path}: {error}") from None

    def _count_prefix(self, prefix: str) -> int:
        rows = self._query(f"SELECT count(*) FROM reports WHERE {_PREFIX}", _prefix_range(prefix))
        count: int = rows[0][0]
        return count

    def _decode(self, trace_id: str, blob: bytes) -> Report:
        try:
            text = zlib.decompress(blob)
        except zlib.error as error:
            raise ReportError(f"{self.path}#{trace_id}: the stored report is corrupt ({error})") from None
        try:
            return report_from_json(text)
        except ReportError as error:
            raise ReportError(f"{self.path}#{trace_id}: {error}") from None


def _prefix_range(prefix: str) -> tuple[str, str]:
    return prefix, prefix + "\U0010ffff"


def _row_values(row: TraceRow) -> tuple[Any, ...]:
    return tuple(getattr(row, column) for column in REPORT_COLUMNS)


def _row_from_db(values: Sequence[Any]) -> TraceRow:
    fields: dict[str, Any] = {
        column: (None if value is None else bool(value)) if column in _BOOL_COLUMNS else value
        for column, value in zip(REPORT_COLUMNS, values, strict=True)
    }
    return TraceRow(**fields)


def _where(query: TraceQuery) -> tuple[str, tuple[Any, ...]]:
    clauses: builtins.list[str] = []
    params: builtins.list[Any] = []
    for column, value, operator in (
        ("model_id", query.model_id, "="),
        ("prompt_hash", query.prompt_hash, "="),
        ("risk_score", query.min_risk, ">="),
        ("risk_score", query.max_risk, "<="),
        ("created_at_ms", None if query.since is None else epoch_ms(query.since), ">="),
        ("created_at_ms", None if query.until is None else epoch_ms(query.until), "<"),
    ):
        if value is not None:
            clauses.append(f"{column} {operator} ?")
            params.append(value)
    clauses.extend(f"{flag.value} = 1" for flag in sorted(query.flags))  # literal 1: partial indexes apply
    where = f" WHERE {' AND '.join(clauses)}" if clauses else ""
    return where, tuple(params)
