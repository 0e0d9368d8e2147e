"""The tables of a CoreVital SQLite database and the chain of migrations that makes them.

``PRAGMA user_version`` is the number of migrations applied (:data:`MIGRATIONS`): version 1 creates
the ``reports`` table, version 2 adds the columns and indexes of the read interface, version 3 the
covering indexes of listings, version 4 the sampling weight. :data:`REPORT_COLUMNS` are the scalar
columns every store (SQLite and PostgreSQL) indexes, in :class:`~corevital.sinks.rows.TraceRow`
order. Opening a database, its identity checks and running the chain are in
:mod:`corevital.sinks.sqlite_schema`.
"""

from __future__ import annotations

import json
import sqlite3
import zlib
from collections.abc import Callable
from typing import Final

from corevital.errors import CoreVitalError
from corevital.report.limits import inflate

REPORT_COLUMNS: Final = (
    "trace_id",
    "created_at_utc",
    "created_at_ms",
    "model_id",
    "prompt_hash",
    "risk_score",
    "nan_detected",
    "inf_detected",
    "attention_collapse_detected",
    "repetition_loop_detected",
    "mid_layer_anomaly_detected",
    "high_entropy_steps",
    "prompt_tokens",
    "generated_tokens",
    "capture_mode",
    "schema_version",
    "migrated_from",
    "prompt_preview",
    "finish_reason",
    "mean_entropy",
    "mean_surprisal",
    "device",
    "quantization",
    "sampling_weight",
)
"""The indexed scalar columns of ``reports``, in :class:`~corevital.sinks.base.TraceRow` order.

``seq``, the row's store position (:attr:`~corevital.sinks.base.TraceRow.seq`), follows them in
the table and is written by the store itself.
"""

FLAG_COLUMNS: Final = (
    "nan_detected",
    "inf_detected",
    "attention_collapse_detected",
    "repetition_loop_detected",
    "mid_layer_anomaly_detected",
)


def _v1_create_reports(conn: sqlite3.Connection) -> None:
    conn.execute(
        """
        CREATE TABLE reports (
            trace_id TEXT PRIMARY KEY NOT NULL,
            created_at_utc TEXT NOT NULL,
            created_at_ms INTEGER NOT NULL,
            model_id TEXT NOT NULL,
            prompt_hash TEXT NOT NULL,
            risk_score REAL,
            nan_detected INTEGER,
            inf_detected INTEGER,
            attention_collapse_detected INTEGER,
            repetition_loop_detected INTEGER,
            mid_layer_anomaly_detected INTEGER,
            high_entropy_steps INTEGER,
            prompt_tokens INTEGER NOT NULL,
            generated_tokens INTEGER NOT NULL,
            capture_mode TEXT,
            schema_version TEXT NOT NULL,
            migrated_from TEXT,
            report_zlib BLOB NOT NULL
        )
        """
    )
    conn.execute("CREATE INDEX idx_reports_created ON reports(created_at_ms DESC)")
    conn.execute("CREATE INDEX idx_reports_model ON reports(model_id, created_at_ms DESC)")
    conn.execute("CREATE INDEX idx_reports_prompt_hash ON reports(prompt_hash, created_at_ms DESC)")
    conn.execute("CREATE INDEX idx_reports_risk ON reports(risk_score)")
    for flag in FLAG_COLUMNS:  # partial indexes: flagged runs are rare and are what one looks for
        conn.execute(f"CREATE INDEX idx_reports_{flag} ON reports(created_at_ms DESC) WHERE {flag} = 1")


RISK_SORT_SQL: Final = "coalesce(risk_score, -1.0)"
"""The risk sort expression (:data:`~corevital.sinks.rows.NO_RISK_SORT_VALUE` without a score)."""


_V1_DECLARATIONS: Final = (
    ("trace_id", "TEXT PRIMARY KEY NOT NULL"),
    ("created_at_utc", "TEXT NOT NULL"),
    ("created_at_ms", "INTEGER NOT NULL"),
    ("model_id", "TEXT NOT NULL"),
    ("prompt_hash", "TEXT NOT NULL"),
    ("risk_score", "REAL"),
    ("nan_detected", "INTEGER"),
    ("inf_detected", "INTEGER"),
    ("attention_collapse_detected", "INTEGER"),
    ("repetition_loop_detected", "INTEGER"),
    ("mid_layer_anomaly_detected", "INTEGER"),
    ("high_entropy_steps", "INTEGER"),
    ("prompt_tokens", "INTEGER NOT NULL"),
    ("generated_tokens", "INTEGER NOT NULL"),
    ("capture_mode", "TEXT"),
    ("schema_version", "TEXT NOT NULL"),
    ("migrated_from", "TEXT"),
)
"""The scalar columns of version 1 (as its ``CREATE TABLE`` declares them)."""
_V1_COLUMNS: Final = REPORT_COLUMNS[:17]
_V2_COLUMNS: Final = (
    ("prompt_preview", "TEXT NOT NULL DEFAULT ''"),
    ("finish_reason", "TEXT"),
    ("mean_entropy", "REAL"),
    ("mean_surprisal", "REAL"),
    ("device", "TEXT"),
    ("quantization", "TEXT"),
)


def _create_table(conn: sqlite3.Connection, name: str, scalars: tuple[tuple[str, str], ...]) -> None:
    """A reports table of these scalar columns, then ``seq`` and the report blob, last."""
    columns = ", ".join(f"{column} {declaration}" for column, declaration in scalars)
    conn.execute(f"CREATE TABLE {name} ({columns}, seq INTEGER NOT NULL, report_zlib BLOB NOT NULL)")


def _v2_read_interface(conn: sqlite3.Connection) -> None:
    """The columns of listing runs (prompt preview, finish reason, mean entropy and surprisal,
    device, quantization), ``seq`` (the store position) and the indexes of keyset pages and
    ``follow``.

    The table is rebuilt so that the report blob is its last column: reading any scalar column
    then never walks the blob's overflow pages (columns added after it would). Existing rows keep
    their order as ``seq`` and are backfilled from their stored reports.
    """
    _create_table(conn, "reports_v2", (*_V1_DECLARATIONS, *_V2_COLUMNS))
    old = ", ".join(_V1_COLUMNS)
    conn.execute(
        f"INSERT INTO reports_v2 ({old}, seq, report_zlib) "
        f"SELECT {old}, rowid, report_zlib FROM reports ORDER BY rowid"
    )
    conn.execute("DROP TABLE reports")
    conn.execute("ALTER TABLE reports_v2 RENAME TO reports")
    _backfill_v2(conn)
    conn.execute("CREATE INDEX idx_reports_created ON reports(created_at_ms DESC)")
    conn.execute("CREATE INDEX idx_reports_model ON reports(model_id, created_at_ms DESC)")
    conn.execute("CREATE INDEX idx_reports_prompt_hash ON reports(prompt_hash, created_at_ms DESC)")
    conn.execute("CREATE INDEX idx_reports_risk ON reports(risk_score)")
    for flag in FLAG_COLUMNS:
        conn.execute(f"CREATE INDEX idx_reports_{flag} ON reports(created_at_ms DESC) WHERE {flag} = 1")
    conn.execute("CREATE UNIQUE INDEX idx_reports_seq ON reports(seq)")
    conn.execute("CREATE INDEX idx_reports_time_id ON reports(created_at_ms DESC, trace_id)")
    conn.execute(f"CREATE INDEX idx_reports_risk_id ON reports({RISK_SORT_SQL} DESC, trace_id)")


def _backfill_v2(conn: sqlite3.Connection) -> None:
    from corevital.sinks.rows import derived_fields_from_document

    names = [column for column, _ in _V2_COLUMNS]
    update = f"UPDATE reports SET {', '.join(f'{name} = ?' for name in names)} WHERE rowid = ?"
    last = 0
    while True:
        batch = conn.execute(
            "SELECT rowid, report_zlib FROM reports WHERE rowid > ? ORDER BY rowid LIMIT 64", (last,)
        ).fetchall()
        if not batch:
            return
        for rowid, blob in batch:
            last = rowid
            try:
                document = json.loads(zlib.decompress(blob))
            except (zlib.error, ValueError, TypeError):
                continue  # a corrupt report keeps empty fields; reading it names the trace
            if isinstance(document, dict):
                fields = derived_fields_from_document(document)
                conn.execute(update, (*(fields[name] for name in names), rowid))


_FILTER_COLUMNS: Final = ("model_id", "risk_score", "created_at_ms", *FLAG_COLUMNS)


def _v3_listing_indexes(conn: sqlite3.Connection) -> None:
    """Indexes that answer every listing from the index alone until a row is returned.

    For each order (time or risk score, descending or ascending: a tie is always broken by
    ascending trace id, so each direction needs its own index) one index holds the order, the trace
    id and the columns filtered on (model, risk score, creation time, flags): rows that do not match
    are skipped without reading the table. Per model, one index per order keeps a model's runs in order. They
    replace the narrower indexes of version 2.
    """
    covered = ", ".join(_FILTER_COLUMNS)
    for name, key in (("time", "created_at_ms"), ("risk", RISK_SORT_SQL)):
        for direction, suffix in (("", "asc"), (" DESC", "desc")):
            conn.execute(
                f"CREATE INDEX idx_list_{name}_{suffix} ON reports({key}{direction}, trace_id, {covered})"
            )
            conn.execute(
                f"CREATE INDEX idx_model_{name}_{suffix} ON reports(model_id, {key}{direction}, trace_id)"
            )
    for index in ("created", "model", "risk", "time_id", "risk_id"):
        conn.execute(f"DROP INDEX IF EXISTS idx_reports_{index}")


_V4_COLUMNS: Final = (("sampling_weight", "REAL NOT NULL DEFAULT 1.0"),)


def _v4_sampling_weight(conn: sqlite3.Connection) -> None:
    """``sampling_weight``: how many runs a stored report stands for (see
    :attr:`~corevital.sinks.rows.TraceRow.sampling_weight`), so that counts over the store (its
    ``/metrics``) are weighted as the exporters' counters are.

    The table is rebuilt, as in version 2, so that the report blob stays the last column; each row's
    weight is read from its stored report (``extensions.sampling.weight``, 1 when it was not
    sampled or cannot be read), and the indexes are made again as they were.
    """
    indexes = [
        sql
        for (sql,) in conn.execute(
            "SELECT sql FROM sqlite_master WHERE type = 'index' AND tbl_name = 'reports' AND sql IS NOT NULL"
        )
    ]
    _create_table(conn, "reports_v4", (*_V1_DECLARATIONS, *_V2_COLUMNS, *_V4_COLUMNS))
    conn.create_function("corevital_sampling_weight", 1, stored_sampling_weight, deterministic=True)
    try:
        old = ", ".join(REPORT_COLUMNS[:23])
        conn.execute(
            f"INSERT INTO reports_v4 ({old}, sampling_weight, seq, report_zlib) "
            f"SELECT {old}, corevital_sampling_weight(report_zlib), seq, report_zlib "
            "FROM reports ORDER BY seq"
        )
    finally:
        conn.create_function("corevital_sampling_weight", 1, None)
    conn.execute("DROP TABLE reports")
    conn.execute("ALTER TABLE reports_v4 RENAME TO reports")
    for sql in indexes:
        conn.execute(sql)


def stored_sampling_weight(blob: object) -> float:
    """The sampling weight recorded in a stored (zlib-compressed) report; 1 when there is none."""
    from corevital.sinks.rows import sampling_weight_from_document

    try:  # bounded: a stored report that inflates beyond the reader's limit is not read here either
        text = inflate(blob, "a stored report") if isinstance(blob, bytes) else b""
        if b'"sampling"' not in text:
            return 1.0  # most reports: not sampled, and not worth parsing
        document = json.loads(text)
    except (CoreVitalError, ValueError, RecursionError):
        return 1.0  # a corrupt report counts once; reading it names the trace
    return sampling_weight_from_document(document) if isinstance(document, dict) else 1.0


MIGRATIONS: Final[tuple[Callable[[sqlite3.Connection], None], ...]] = (
    _v1_create_reports,
    _v2_read_interface,
    _v3_listing_indexes,
    _v4_sampling_weight,
)
"""Migration ``i`` takes a database from ``user_version`` i to i + 1. Append; never edit."""

LATEST_VERSION: Final = len(MIGRATIONS)


__all__ = [
    "FLAG_COLUMNS",
    "LATEST_VERSION",
    "MIGRATIONS",
    "REPORT_COLUMNS",
    "RISK_SORT_SQL",
    "stored_sampling_weight",
]
