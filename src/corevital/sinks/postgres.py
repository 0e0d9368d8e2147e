"""A report store in a PostgreSQL database, for many writers on many machines.

The same :class:`~corevital.sinks.base.ReportStore` as :class:`~corevital.sinks.sqlite.SQLiteStore`,
with the same semantics (stated in :mod:`corevital.sinks.rows`, which both use: filters, order,
the keyset cursor, aggregates): one row per report in ``corevital_reports``, the indexed scalars of
:class:`~corevital.sinks.rows.TraceRow` in their own columns and the report JSON zlib-compressed in
``report_zlib`` (the bytes the SQLite store keeps: ``get_json`` returns the text exactly as
written). Tables, indexes and migrations are in :mod:`corevital.sinks.postgres_schema`.

Writes are idempotent on the trace id (``INSERT ... ON CONFLICT``: a report written again replaces
the stored one and keeps its ``seq``). Every write holds a transaction-scoped advisory lock until it
commits and takes ``max(seq) + 1`` under it, so ``seq`` values become visible in increasing order:
a reader following the store (``follow(after)``) never skips a row that commits late, which a
sequence could not promise (its numbers are taken before the commit order is known). Writers from
any number of processes and machines are safe; each write is one short transaction.

Connections come from a pool (``psycopg_pool``) of ``pool_size`` connections, so that the threads
of one process (the HTTP server's) read side by side. ``read_only=True`` never creates, writes or
migrates the store, and its connections are read-only on the server too. Messages name the
database by its URL without the password. psycopg is the ``postgres`` extra, imported when a store
is opened.
"""

from __future__ import annotations

import builtins
import contextlib
import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Final

from corevital.closing import ClosesOnExit
from corevital.errors import NotAvailableError, StoreError
from corevital.report.limits import MAX_REPORT_BYTES
from corevital.report.timestamps import epoch_ms
from corevital.sinks.encoded import EncodedReport, parse_stored, stored_json_text
from corevital.sinks.postgres_schema import REPORTS_TABLE, RISK_SORT_SQL, WRITE_LOCK, prepare
from corevital.sinks.postgres_url import redact_url
from corevital.sinks.rows import (
    MAX_PAGE_SIZE,
    ModelAggregate,
    Page,
    SortOrder,
    TraceQuery,
    TraceRow,
    aggregate_key,
    aggregate_of,
    make_page,
    order_aggregates,
    order_clause,
    page_where,
    prefix_range,
)
from corevital.sinks.sqlite_schema import FLAG_COLUMNS, REPORT_COLUMNS

if TYPE_CHECKING:
    import psycopg
    from psycopg_pool import ConnectionPool

    from corevital.report.schema import Report

CONNECT_TIMEOUT_S: Final = 10
"""How long opening one connection may take before the store gives up."""
POOL_TIMEOUT_S: Final = 30.0
"""How long a call waits for a free connection of the pool (or for a lost one to be replaced)."""

_T = REPORTS_TABLE
_INSERT: Final = (
    f"INSERT INTO {_T} ({', '.join(REPORT_COLUMNS)}, report_zlib, seq) "
    f"VALUES ({', '.join('%s' for _ in REPORT_COLUMNS)}, %s, "
    f"(SELECT coalesce(max(seq), 0) + 1 FROM {_T})) "
    f"ON CONFLICT (trace_id) DO UPDATE SET "
    + ", ".join(f"{column} = excluded.{column}" for column in (*REPORT_COLUMNS[1:], "report_zlib"))
)
_SELECT_ROWS: Final = f"SELECT {', '.join(REPORT_COLUMNS)}, seq FROM {_T}"
_PREFIX: Final = "trace_id >= %s AND trace_id < %s"  # a range: the primary key index applies
_SORT_SQL: Final = {SortOrder.TIME: "created_at_ms", SortOrder.RISK: RISK_SORT_SQL}


class PostgresStore(ClosesOnExit):
    """A :class:`~corevital.sinks.base.ReportStore` in a PostgreSQL database given by URL.

    ``postgresql://user:password@host:port/database`` (or ``postgres://``; any libpq URL:
    ``?sslmode=require``, ``?options=-csearch_path%3Dmyschema`` for a schema of its own, a Unix
    socket with ``?host=/run/postgresql``). A writer (the default) creates the store's tables when
    the database has none (``create=False`` refuses such a database instead) and migrates an older
    store; ``read_only=True`` does neither and refuses writes. Opening fails at once, with a
    one-line :class:`~corevital.errors.StoreError`, when the server cannot be reached or the
    database is not usable. Safe to share between threads.

    A stored report is inflated with a bound: one that would take more than ``max_report_bytes``
    (256 MB by default) is refused with a :class:`~corevital.errors.ReportError`, as the SQLite
    store does.
    """

    def __init__(
        self,
        url: str,
        *,
        read_only: bool = False,
        pool_size: int = 1,
        create: bool = True,
        max_report_bytes: int = MAX_REPORT_BYTES,
    ) -> None:
        psycopg, pool_module = _import_driver()
        self.url = url
        self.location = redact_url(url)
        self.read_only = read_only
        self.max_report_bytes = max_report_bytes
        self._secret = _password(psycopg, url)
        self._closed = threading.Event()
        try:
            with psycopg.connect(url, autocommit=True, connect_timeout=CONNECT_TIMEOUT_S) as conn:
                prepare(conn, f"PostgreSQL database {self.location}", read_only=read_only, create=create)
        except psycopg.Error as error:
            raise StoreError(
                f"cannot open PostgreSQL store {self.location}: {self._one_line(error)}"
            ) from None
        self._pool: ConnectionPool[Any] = pool_module.ConnectionPool(
            url,
            min_size=max(pool_size, 1),
            max_size=max(pool_size, 1),
            kwargs={"autocommit": True, "connect_timeout": CONNECT_TIMEOUT_S},
            configure=_read_only_session if read_only else None,
            timeout=POOL_TIMEOUT_S,
            open=False,
            name="corevital-store",
        )
        try:
            self._pool.open(wait=True, timeout=CONNECT_TIMEOUT_S * 2)
        except psycopg.Error as error:
            self._pool.close()
            raise StoreError(
                f"cannot open PostgreSQL store {self.location}: {self._one_line(error)}"
            ) from None
        self._error: type[Exception] = psycopg.Error
        self._pipeline: bool = psycopg.Pipeline.is_supported()

    def write(self, report: Report) -> str:
        """Store ``report`` (replacing a report with the same trace id, which keeps its ``seq``);
        returns ``<URL without password>#<trace id>``."""
        return self.write_encoded(EncodedReport(report))

    def write_encoded(self, encoded: EncodedReport) -> str:
        """:meth:`write`, reusing the report's encoding (shared with the other destinations)."""
        return self.write_batch_encoded([encoded])[0]

    def write_batch_encoded(self, batch: Sequence[EncodedReport]) -> builtins.list[str]:
        """Store every report of ``batch`` in one transaction (all of them or none); their
        locations in order."""
        if self.read_only:
            raise StoreError(f"the PostgreSQL store {self.location} is open read-only")
        if not batch:
            return []
        rows = [(*(getattr(e.row, column) for column in REPORT_COLUMNS), e.zlib) for e in batch]
        self._check_open()
        try:
            # One round trip where libpq has pipeline mode: the lock is held for the server's work
            # only, never while this process waits for a CPU between two statements.
            with (
                self._pool.connection() as conn,
                conn.pipeline() if self._pipeline else contextlib.nullcontext(),
                conn.transaction(),
            ):
                conn.execute("SELECT pg_advisory_xact_lock(%s)", (WRITE_LOCK,))
                for values in rows:
                    conn.execute(_INSERT, values)
        except self._error as error:
            ids = ", ".join(e.report.trace_id for e in batch)
            noun = "report" if len(batch) == 1 else "reports"
            raise StoreError(
                f"cannot write {noun} {ids} to {self.location}: {self._one_line(error)}"
            ) from None
        return [f"{self.location}#{e.report.trace_id}" for e in batch]

    def get(self, trace_id: str) -> Report | None:
        """The report with this trace id (or a unique prefix of it), or ``None``."""
        found = self.resolve(trace_id)
        text = None if found is None else self.get_json(found)
        if found is None or text is None:
            return None
        return parse_stored(text, f"{self.location}#{found}")

    def resolve(self, trace_id: str) -> str | None:
        """The full trace id of this id or unique prefix, or ``None`` (StoreError when ambiguous)."""
        if self.contains(trace_id):
            return trace_id
        if not trace_id or "\x00" in trace_id:
            return None
        matches = self._query(f"SELECT trace_id FROM {_T} WHERE {_PREFIX} LIMIT 2", prefix_range(trace_id))
        if len(matches) > 1:
            total = self._query(f"SELECT count(*) FROM {_T} WHERE {_PREFIX}", prefix_range(trace_id))
            from corevital.sinks.base import ambiguous_prefix_message

            raise StoreError(ambiguous_prefix_message(trace_id, total[0][0]))
        return str(matches[0][0]) if matches else None

    def get_json(self, trace_id: str) -> str | None:
        """The stored report JSON text for exactly this trace id, not parsed; ``None`` if absent."""
        if "\x00" in trace_id:
            return None
        rows = self._query(f"SELECT report_zlib FROM {_T} WHERE trace_id = %s", (trace_id,))
        if not rows:
            return None
        return stored_json_text(
            rows[0][0], f"{self.location}#{trace_id}: the stored report", self.max_report_bytes
        )

    def contains(self, trace_id: str) -> bool:
        """Whether exactly this trace id is stored."""
        if "\x00" in trace_id:  # PostgreSQL text holds no NUL: no stored id has one
            return False
        return bool(self._query(f"SELECT 1 FROM {_T} WHERE trace_id = %s", (trace_id,)))

    def list(self, query: TraceQuery | None = None) -> builtins.list[TraceRow]:
        """Index rows matching ``query``, in its order."""
        query = query or TraceQuery()
        where, params = _where(query)
        sql = f"{_SELECT_ROWS}{where} ORDER BY {order_clause(query, _SORT_SQL)} LIMIT %s OFFSET %s"
        return [TraceRow(*values) for values in self._query(sql, (*params, query.limit, query.offset))]

    def count(self, query: TraceQuery | None = None) -> int:
        """Number of reports matching ``query`` (order, limit and offset aside)."""
        where, params = _where(query or TraceQuery())
        count: int = self._query(f"SELECT count(*) FROM {_T}{where}", params)[0][0]
        return count

    def page(self, query: TraceQuery | None = None, cursor: str | None = None) -> Page:
        """One page of matching rows after ``cursor`` (see :meth:`ReportStore.page`)."""
        query = query or TraceQuery()
        size = query.page_size()
        where, params, offset = page_where(query, cursor, *_where(query), _SORT_SQL, "%s")
        sql = f"{_SELECT_ROWS}{where} ORDER BY {order_clause(query, _SORT_SQL)} LIMIT %s OFFSET %s"
        rows = [TraceRow(*values) for values in self._query(sql, (*params, size + 1, offset))]
        return make_page(query, rows, size)

    def aggregate(
        self, query: TraceQuery | None = None, *, by: str = "model"
    ) -> builtins.list[ModelAggregate]:
        """Per-model (or per-prompt-hash) statistics of the matching reports, in one query."""
        key = aggregate_key(by)
        where, params = _where(query or TraceQuery())
        flag_counts = ", ".join(f"count(*) FILTER (WHERE {flag})" for flag in FLAG_COLUMNS)
        sql = (
            f"SELECT {key}, count(*), sum(generated_tokens), {flag_counts}, "
            "array_agg(risk_score) FILTER (WHERE risk_score IS NOT NULL), array_agg(mean_entropy) "
            f"FROM {_T}{where} GROUP BY {key}"
        )
        return order_aggregates(
            aggregate_of(
                group,
                runs=runs,
                risks=risks or [],
                flag_counts=dict(zip(FLAG_COLUMNS, flags, strict=True)),
                entropies=entropies or [],
                generated_tokens=tokens or 0,
            )
            for group, runs, tokens, *flags, risks, entropies in self._query(sql, params)
        )

    def follow(self, after: int | None) -> tuple[builtins.list[TraceRow], int]:
        """Rows stored with ``seq > after``, oldest first (see :meth:`ReportStore.follow`)."""
        if after is None:
            last: int = self._query(f"SELECT coalesce(max(seq), 0) FROM {_T}")[0][0]
            return [], last
        sql = f"{_SELECT_ROWS} WHERE seq > %s ORDER BY seq LIMIT %s"
        rows = [TraceRow(*values) for values in self._query(sql, (after, MAX_PAGE_SIZE))]
        return rows, rows[-1].seq if rows else after

    def close(self) -> None:
        """Close the pool's connections; later calls raise :class:`~corevital.errors.StoreError`."""
        if not self._closed.is_set():
            self._closed.set()
            self._pool.close()

    def _check_open(self) -> None:
        if self._closed.is_set():
            raise StoreError(f"the PostgreSQL store {self.location} is closed")

    def _query(self, sql: str, params: Sequence[Any] = ()) -> builtins.list[tuple[Any, ...]]:
        self._check_open()
        try:
            with self._pool.connection() as conn:
                rows: builtins.list[tuple[Any, ...]] = conn.execute(sql, params).fetchall()
                return rows
        except self._error as error:
            self._check_open()
            raise StoreError(f"cannot read {self.location}: {self._one_line(error)}") from None

    def _one_line(self, error: BaseException) -> str:
        """The error's message on one line, the URL's password (if any) replaced by ``***``."""
        text = "; ".join(line.strip() for line in str(error).splitlines() if line.strip())
        if self._secret:
            text = text.replace(self._secret, "***")
        return text or type(error).__name__


def _import_driver() -> tuple[Any, Any]:
    try:
        import psycopg
        import psycopg_pool
    except ImportError as exc:
        raise NotAvailableError(
            "a PostgreSQL store needs the postgres extra: "
            f"pip install 'corevital[postgres]' ({exc.name} is missing)"
        ) from None
    return psycopg, psycopg_pool


def _password(psycopg: Any, url: str) -> str | None:
    """The URL's password, to keep it out of messages; a URL libpq cannot read is a StoreError."""
    try:
        params = psycopg.conninfo.conninfo_to_dict(url)
    except psycopg.Error:
        raise StoreError(f"cannot read the PostgreSQL URL {redact_url(url)}") from None
    password = params.get("password")
    return str(password) if password else None


def _read_only_session(conn: psycopg.Connection[Any]) -> None:
    """Every transaction of the connection is read-only (the server refuses writes)."""
    conn.execute("SET default_transaction_read_only = on")


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
        if isinstance(value, str) and "\x00" in value:
            clauses.append("false")  # PostgreSQL text holds no NUL: no stored value has one
        elif value is not None:
            clauses.append(f"{column} {operator} %s")
            params.append(value)
    clauses.extend(flag.value for flag in sorted(query.flags))  # a bare column: the partial indexes apply
    where = f" WHERE {' AND '.join(clauses)}" if clauses else ""
    return where, tuple(params)
