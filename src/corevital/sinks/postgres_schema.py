"""The PostgreSQL store's tables, identity checks and migration chain.

A CoreVital store in a PostgreSQL database (in the first schema of its ``search_path``) is two
tables: :data:`REPORTS_TABLE`, one row per report (the indexed scalars of
:class:`~corevital.sinks.rows.TraceRow`, ``seq`` and the zlib-compressed report JSON), and
:data:`VERSION_TABLE`, one row naming the application and the number of migrations applied
(:data:`MIGRATIONS`: version 1 creates the tables, version 2 the indexes of the read interface,
version 3 the sampling weight).

Opening a store (:func:`prepare`) as a writer creates a missing store and migrates an older one,
in one transaction under an advisory lock, so that several processes opening the same database at
once migrate it once. It refuses, before writing anything, a database whose ``corevital_reports``
table was not made by CoreVital and one written by a newer CoreVital. A reader never creates,
writes or migrates: a missing store and a store of another version are StoreErrors. Other tables of
the database are left alone (a store can share a database with anything else).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final

from corevital.errors import StoreError
from corevital.sinks.sqlite_schema import FLAG_COLUMNS, REPORT_COLUMNS

if TYPE_CHECKING:
    import psycopg

REPORTS_TABLE: Final = "corevital_reports"
VERSION_TABLE: Final = "corevital_schema"
APPLICATION: Final = "corevital"

MIGRATION_LOCK: Final = 0x436F566901
"""The advisory lock (``pg_advisory_xact_lock``) held while a store is created or migrated."""
WRITE_LOCK: Final = 0x436F566902
"""The advisory lock every write holds until it commits (see :mod:`corevital.sinks.postgres`)."""

RISK_SORT_SQL: Final = "coalesce(risk_score, -1.0)"
"""The risk sort expression (:data:`~corevital.sinks.rows.NO_RISK_SORT_VALUE` without a score)."""

_COLUMN_TYPES: Final = {
    "trace_id": 'text COLLATE "C" PRIMARY KEY',  # byte order: ties and prefixes as Python compares str
    "created_at_utc": "text NOT NULL",
    "created_at_ms": "bigint NOT NULL",
    "model_id": "text NOT NULL",
    "prompt_hash": "text NOT NULL",
    "risk_score": "double precision",
    **{flag: "boolean" for flag in FLAG_COLUMNS},
    "high_entropy_steps": "integer",
    "prompt_tokens": "integer NOT NULL",
    "generated_tokens": "integer NOT NULL",
    "capture_mode": "text",
    "schema_version": "text NOT NULL",
    "migrated_from": "text",
    "prompt_preview": "text NOT NULL DEFAULT ''",
    "finish_reason": "text",
    "mean_entropy": "double precision",
    "mean_surprisal": "double precision",
    "device": "text",
    "quantization": "text",
}
_V1_COLUMNS: Final = REPORT_COLUMNS[:23]
"""The scalar columns of version 1 (:data:`~corevital.sinks.sqlite_schema.REPORT_COLUMNS` then)."""


def _v1_create_tables(conn: psycopg.Connection[Any]) -> None:
    """The reports table: the scalar columns of version 1, ``seq`` (unique) and the compressed
    report, stored out of line and not compressed again."""
    columns = ",\n".join(f"{column} {_COLUMN_TYPES[column]}" for column in _V1_COLUMNS)
    conn.execute(
        f"CREATE TABLE {REPORTS_TABLE} ({columns},\nseq bigint NOT NULL,\nreport_zlib bytea NOT NULL)"
    )
    conn.execute(f"ALTER TABLE {REPORTS_TABLE} ALTER COLUMN report_zlib SET STORAGE EXTERNAL")
    conn.execute(f"CREATE UNIQUE INDEX {REPORTS_TABLE}_seq ON {REPORTS_TABLE} (seq)")


def _v2_read_indexes(conn: psycopg.Connection[Any]) -> None:
    """The indexes of listings, pages and filters, as the SQLite store has them.

    For each order (creation time or risk score, descending or ascending: a tie is broken by
    ascending trace id, so each direction needs its own index) one index over all runs and one per
    model; the prompt hash with the time; and per health flag a partial index of the flagged runs
    (rare, and what one looks for).
    """
    table = REPORTS_TABLE
    for name, key in (("time", "created_at_ms"), ("risk", f"({RISK_SORT_SQL})")):
        for direction, suffix in (("", "asc"), (" DESC", "desc")):
            statements = (
                f"CREATE INDEX {table}_{name}_{suffix} ON {table} ({key}{direction}, trace_id)",
                f"CREATE INDEX {table}_model_{name}_{suffix} "
                f"ON {table} (model_id, {key}{direction}, trace_id)",
            )
            for statement in statements:
                conn.execute(statement)
    conn.execute(f"CREATE INDEX {table}_prompt_hash ON {table} (prompt_hash, created_at_ms DESC, trace_id)")
    for flag in FLAG_COLUMNS:
        conn.execute(f"CREATE INDEX {table}_{flag} ON {table} (created_at_ms DESC, trace_id) WHERE {flag}")


def _v3_sampling_weight(conn: psycopg.Connection[Any]) -> None:
    """``sampling_weight``: how many runs a stored report stands for (see
    :attr:`~corevital.sinks.rows.TraceRow.sampling_weight`), so that counts over the store are
    weighted as the exporters' counters are. Existing rows get 1, then those whose stored report
    records a sampling weight (``extensions.sampling.weight``) get it, read in batches by ``seq``."""
    from corevital.sinks.sqlite_migrations import stored_sampling_weight

    conn.execute(
        f"ALTER TABLE {REPORTS_TABLE} ADD COLUMN sampling_weight double precision NOT NULL DEFAULT 1.0"
    )
    last = 0
    while True:
        batch = conn.execute(
            f"SELECT seq, report_zlib FROM {REPORTS_TABLE} WHERE seq > %s ORDER BY seq LIMIT 64", (last,)
        ).fetchall()
        if not batch:
            return
        for seq, blob in batch:
            last = seq
            weight = stored_sampling_weight(bytes(blob))
            if weight != 1.0:
                conn.execute(f"UPDATE {REPORTS_TABLE} SET sampling_weight = %s WHERE seq = %s", (weight, seq))


MIGRATIONS: Final[tuple[Callable[[psycopg.Connection[Any]], None], ...]] = (
    _v1_create_tables,
    _v2_read_indexes,
    _v3_sampling_weight,
)
"""Migration ``i`` takes a store from version i to i + 1. Append; never edit."""

LATEST_VERSION: Final = len(MIGRATIONS)


def store_version(conn: psycopg.Connection[Any], where: str) -> int:
    """The store's version: 0 when the database holds no store; StoreError for a foreign table."""
    tables = conn.execute(
        "SELECT to_regclass(%s) IS NOT NULL, to_regclass(%s) IS NOT NULL", (VERSION_TABLE, REPORTS_TABLE)
    ).fetchone()
    assert tables is not None
    has_version, has_reports = tables
    if not has_version:
        if has_reports:
            raise StoreError(
                f"{where} has a table {REPORTS_TABLE} that CoreVital did not make; it was left untouched"
            )
        return 0
    row = conn.execute(f"SELECT application, version FROM {VERSION_TABLE}").fetchone()
    if row is None or row[0] != APPLICATION:
        raise StoreError(
            f"{where} has a table {VERSION_TABLE} that CoreVital did not make; it was left untouched"
        )
    version: int = row[1]
    if version > LATEST_VERSION:
        raise StoreError(
            f"{where} was written by a newer CoreVital (store version {version}, this one knows up "
            f"to {LATEST_VERSION}); upgrade CoreVital"
        )
    return version


def prepare(conn: psycopg.Connection[Any], where: str, *, read_only: bool, create: bool) -> None:
    """Make sure ``conn``'s database holds a store of :data:`LATEST_VERSION` (see the module docstring).

    ``conn`` is in autocommit mode. A reader, or a writer with ``create=False``, refuses a database
    without a store.
    """
    version = store_version(conn, where)
    if version == LATEST_VERSION:
        return
    if version == 0 and (read_only or not create):
        raise StoreError(
            f"{where} holds no CoreVital store (store runs there with `corevital run --sink postgres`)"
        )
    if read_only:
        raise StoreError(
            f"{where} is a store of an older CoreVital (version {version}, this one reads "
            f"{LATEST_VERSION}); open it once with a writer to upgrade it "
            "(for example `corevital runs --db URL`)"
        )
    migrate(conn, where)


def migrate(conn: psycopg.Connection[Any], where: str, *, to: int = LATEST_VERSION) -> None:
    """Apply the migrations from the store's version up to ``to``, in one transaction."""
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))
        version = store_version(conn, where)  # another process may have migrated it meanwhile
        if version >= to:
            return
        if version == 0:
            conn.execute(
                f"CREATE TABLE {VERSION_TABLE} (application text NOT NULL, version integer NOT NULL)"
            )
            conn.execute(f"INSERT INTO {VERSION_TABLE} VALUES (%s, 0)", (APPLICATION,))
        for migration in MIGRATIONS[version:to]:
            migration(conn)
        conn.execute(f"UPDATE {VERSION_TABLE} SET version = %s", (to,))
