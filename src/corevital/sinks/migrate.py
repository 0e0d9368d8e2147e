"""Importing existing reports into a store: directories of ``trace_*.json`` and SQLite databases.

Every report is read with :func:`corevital.report.encoding.report_from_json`, so reports of the
original CoreVital (schema 0.3.0 and 0.4.0) are upgraded to 0.5.0 on the way, with
``extensions.migrated_from`` recording the original version. Reports already in the store (same
trace id) are skipped; a report that cannot be read or written is recorded as a failure and the
import goes on. The source is only read, never modified.

A database with corrupt pages is imported as far as it can be read: when reading the reports
stops at a damaged page, the rows are found again by their rowids (the table's b-tree searched past
the damage) and by the trace-id index, each row is read on its own, and every row that cannot be
read is a failure naming its trace id (from the index) or, where the index cannot tell, the range
of rowids the damage hides.

The original CoreVital's SQLite database (its ``SQLiteSink`` in ``src/CoreVital/sinks/sqlite_sink.py``,
default ``runs/corevital.db``) has one table::

    reports(trace_id TEXT PRIMARY KEY, created_at_utc TEXT NOT NULL, model_id TEXT NOT NULL,
            schema_version TEXT NOT NULL, report_json TEXT, report_blob BLOB,
            prompt_hash TEXT, risk_score REAL)

with the report as compact JSON text in ``report_json`` or, by default, gzip-compressed JSON in
``report_blob`` (the other column NULL). Its first version had ``report_json`` only and the last
two columns came later, so only ``trace_id`` and one of the two body columns are required here; a
body is recognised by its bytes (gzip, zlib or plain UTF-8 JSON). The original set neither
``application_id`` nor ``user_version``. A CoreVital 0.5 database (``report_zlib``) is read too,
which merges one store into another. Since both tools default to ``runs/corevital.db``,
:func:`migrate_original_in_place` renames an original database aside and imports it into a new one
at the same path.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from corevital.errors import ReportError, StoreError
from corevital.report.encoding import report_from_json
from corevital.report.limits import MAX_REPORT_BYTES, inflate, read_bounded, stored_bytes
from corevital.report.schema import Report
from corevital.sinks.base import ReportStore
from corevital.sinks.local import TRACE_FILE_GLOB
from corevital.sinks.sqlite import SQLiteStore
from corevital.sinks.sqlite_schema import (
    SQLITE_HEADER,
    DatabaseKind,
    database_kind,
    read_header,
    table_columns,
)

_BATCH = 32


@dataclass(frozen=True, slots=True)
class MigrationFailure:
    """A report that could not be imported: where it came from and why."""

    source: str
    reason: str


@dataclass(slots=True)
class MigrationResult:
    """What an import did: trace ids imported and skipped (already present), and the failures."""

    imported: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: list[MigrationFailure] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """Whether nothing failed."""
        return not self.failed

    def summary(self) -> str:
        """One line: ``imported N, skipped N, failed N``."""
        return f"imported {len(self.imported)}, skipped {len(self.skipped)}, failed {len(self.failed)}"


def migrate_directory(from_dir: str | Path, store: ReportStore) -> MigrationResult:
    """Import every ``trace_*.json`` file of ``from_dir`` (not its subdirectories), in name order."""
    directory = Path(from_dir)
    if not directory.is_dir():
        raise StoreError(f"{directory} is not a directory")
    result = MigrationResult()
    for path in sorted(directory.glob(TRACE_FILE_GLOB)):
        if path.is_file():
            _import_one(str(path), partial(_read_file, path), store, result)
    return result


def migrate_sqlite(db_path: str | Path, store: ReportStore) -> MigrationResult:
    """Import every report of an original CoreVital (or CoreVital 0.5) SQLite database, opened
    read-only; past corrupt pages, every readable report (see the module's description)."""
    path = Path(db_path)
    conn = _open_read_only(path)
    result = MigrationResult()
    done: set[object] = set()  # trace id cells already imported, skipped or failed
    try:
        try:
            columns = _body_columns(conn, path)
        except _READ_ERRORS as error:
            raise StoreError(f"cannot read {path}: {_reason(error)}") from None
        if columns is None:
            return result
        try:
            for trace_id, text, blob in _stored_bodies(conn, columns):
                done.add(trace_id)
                _import_one(f"{path}#{trace_id}", partial(_decode_body, text, blob), store, result)
        except _READ_ERRORS as error:
            if not _is_damage(error):
                raise StoreError(f"cannot read {path}: {_reason(error)}") from None
            _import_past_damage(conn, path, columns, store, result, done)
    finally:
        conn.close()
    return result


def migrate_path(source: str | Path, store: ReportStore) -> MigrationResult:
    """Import from a directory of trace files or from an SQLite database file."""
    location = Path(source)
    if location.is_dir():
        return migrate_directory(location, store)
    return migrate_sqlite(location, store)


def migrate_into(source: str | Path, to_location: str | Path) -> MigrationResult:
    """Import from ``source`` (as :func:`migrate_path`) into the store at ``to_location`` (a SQLite
    file or a ``postgresql://`` URL).

    The source is checked before the target is opened (a missing, unreadable or foreign source
    is an error that touches nothing), and a SQLite target that did not exist and into which
    nothing was imported is removed again: a failed import leaves no empty database behind.
    """
    from corevital.sinks.open import is_postgres_url, open_location

    location = Path(source)
    if not location.is_dir():
        _open_read_only(location).close()  # StoreError for a missing or non-SQLite source
    target = None if is_postgres_url(to_location) else Path(to_location)
    existed = target is None or target.exists()
    store = open_location(to_location)
    result: MigrationResult | None = None
    try:
        result = migrate_path(location, store)
    finally:
        store.close()
        if not existed and target is not None and (result is None or not result.imported):
            for leftover in (target, *(target.with_name(target.name + end) for end in ("-wal", "-shm"))):
                leftover.unlink(missing_ok=True)
    return result


@dataclass(frozen=True, slots=True)
class InPlaceMigration:
    """An original database replaced by a CoreVital 0.5 one at the same path."""

    original_kept_at: Path
    result: MigrationResult


def migrate_original_in_place(db_path: str | Path) -> InPlaceMigration:
    """Turn an original CoreVital database into a CoreVital 0.5 one at the same path.

    Both tools default to ``runs/corevital.db``. The original file is renamed (never modified) to
    ``<name>.original`` beside it, and its reports are imported into a new database at ``db_path``.
    """
    path = Path(db_path)
    kept = path.with_name(path.name + ".original")
    for blocker in (kept, path.with_name(path.name + "-journal"), path.with_name(path.name + "-wal")):
        if blocker.exists():
            raise StoreError(f"{blocker} exists; move it away before migrating {path} in place")
    conn = _open_read_only(path)
    try:
        kind = database_kind(conn)
    except _READ_ERRORS as error:
        raise StoreError(f"cannot read {path}: {_reason(error)}") from None
    finally:
        conn.close()
    if kind is not DatabaseKind.ORIGINAL_COREVITAL:
        raise StoreError(f"{path} is not a database of the original CoreVital")
    try:
        path.rename(kept)
    except OSError as error:
        raise StoreError(f"cannot rename {path}: {error.strerror or error}") from None
    store = SQLiteStore(path)
    try:
        return InPlaceMigration(original_kept_at=kept, result=migrate_sqlite(kept, store))
    finally:
        store.close()


def _import_one(source: str, read: Callable[[], Report], store: ReportStore, result: MigrationResult) -> None:
    try:
        report = read()
        if store.contains(report.trace_id):
            result.skipped.append(report.trace_id)
            return
        store.write(report)
    except (ReportError, StoreError) as error:
        result.failed.append(MigrationFailure(source=source, reason=str(error)))
        return
    except Exception as error:  # noqa: BLE001 - a hostile file never stops the import of the others
        result.failed.append(MigrationFailure(source=source, reason=_one_line(error)))
        return
    result.imported.append(report.trace_id)


def _one_line(error: BaseException) -> str:
    text = " ".join(str(error).split())[:200]
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


def _read_file(path: Path) -> Report:
    data = read_bounded(path, MAX_REPORT_BYTES, "", error=ReportError)
    return report_from_json(inflate(data, "the report file"))


def _open_read_only(path: Path) -> sqlite3.Connection:
    if not path.is_file():
        raise StoreError(f"{path} is neither a directory nor an SQLite database file")
    header = read_header(path)
    if header != SQLITE_HEADER:
        raise StoreError(f"{path} is not an SQLite database")
    try:
        conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
    except sqlite3.Error as error:
        raise StoreError(f"cannot open {path}: {error}") from None
    conn.text_factory = _text  # a damaged page may hold text that is not UTF-8 (names, trace ids, bodies)
    return conn


def _text(data: bytes) -> str:
    """A TEXT value as str; bytes that are not UTF-8 kept as lone surrogates (``surrogateescape``),
    so that a body turns back into its exact bytes (:func:`~corevital.report.limits.stored_bytes`)
    and is refused with the offset of the first bad byte, never read with characters replaced."""
    return data.decode("utf-8", "surrogateescape")


@dataclass(frozen=True, slots=True)
class _BodyColumns:
    """How the reports of a source database are selected: ``trace_id, <text>, <blob>``, in ``order``."""

    select: str
    order: str


def _body_columns(conn: sqlite3.Connection, path: Path) -> _BodyColumns | None:
    """The source's reports columns (None for an empty database); a foreign one is a StoreError."""
    kind = database_kind(conn)
    if kind is DatabaseKind.EMPTY:
        return None
    if kind is DatabaseKind.COREVITAL:
        return _BodyColumns("trace_id, NULL, report_zlib", "created_at_ms, trace_id")
    if kind is DatabaseKind.ORIGINAL_COREVITAL:
        columns = table_columns(conn, "reports")
        text = "report_json" if "report_json" in columns else "NULL"
        blob = "report_blob" if "report_blob" in columns else "NULL"
        order = "created_at_utc, trace_id" if "created_at_utc" in columns else "trace_id"
        return _BodyColumns(f"trace_id, {text}, {blob}", order)
    raise StoreError(f"{path} is not a CoreVital database: it has no reports table of a known layout")


def _stored_bodies(conn: sqlite3.Connection, columns: _BodyColumns) -> Iterator[tuple[Any, Any, Any]]:
    cursor = conn.execute(f"SELECT {columns.select} FROM reports ORDER BY {columns.order}")
    while batch := cursor.fetchmany(_BATCH):
        yield from batch


# --- past corrupt pages -------------------------------------------------------------------------

_READ_ERRORS = (sqlite3.DatabaseError, UnicodeDecodeError)
"""What reading a source database may raise: SQLite's errors, and a UnicodeDecodeError where the
message SQLite gives for a damaged schema quotes text that is not UTF-8."""
_DAMAGE_CODES = frozenset({10, 11, 26})  # SQLITE_IOERR, SQLITE_CORRUPT, SQLITE_NOTADB (primary codes)
_MIN_ROWID = -(2**63)
_MAX_ROWID = 2**63 - 1
_ROWID_BATCH = 256


def _reason(error: Exception) -> str:
    if isinstance(error, UnicodeDecodeError):
        return "database disk image is malformed (SQLite quotes damaged text that is not UTF-8)"
    return str(error)


def _is_damage(error: Exception) -> bool:
    """Whether ``error`` comes from a damaged file (a corrupt or short page), not from the query."""
    if isinstance(error, UnicodeDecodeError):  # SQLite's own message quotes damaged text
        return True
    code = getattr(error, "sqlite_errorcode", None)
    if isinstance(code, int):
        return code & 0xFF in _DAMAGE_CODES
    return "malformed" in str(error) or "disk i/o error" in str(error).lower()


def _import_past_damage(
    conn: sqlite3.Connection,
    path: Path,
    columns: _BodyColumns,
    store: ReportStore,
    result: MigrationResult,
    done: set[object],
) -> None:
    """Import the reports not yet in ``done``, row by row, around the damaged pages."""
    try:
        rowids, gaps = _readable_rowids(conn)
    except _READ_ERRORS as error:  # no rowids to search by (a WITHOUT ROWID table, ...)
        raise StoreError(f"cannot read {path}: {_reason(error)}") from None
    indexed, index_complete = _indexed_trace_ids(conn)
    for rowid in sorted(set(rowids) | set(indexed)):
        name = indexed.get(rowid, f"rowid {rowid}")
        try:
            row = conn.execute(f"SELECT {columns.select} FROM reports WHERE rowid = ?", (rowid,)).fetchone()
        except _READ_ERRORS as error:
            if name not in done:
                result.failed.append(MigrationFailure(f"{path}#{name}", f"unreadable: {_reason(error)}"))
            continue
        if row is None:
            reason = "listed in the trace_id index, but its row is not in the table (a damaged page)"
            result.failed.append(MigrationFailure(f"{path}#{name}", reason))
            continue
        trace_id, text, blob = row
        if trace_id in done:
            continue
        done.add(trace_id)
        _import_one(f"{path}#{trace_id}", partial(_decode_body, text, blob), store, result)
    if not index_complete:  # rows the damage hides and no index names
        for low, high in gaps:
            if high is None:
                where = f"rowids from {low}"
            else:
                where = f"rowid {low}" if high - 1 == low else f"rowids {low} to {high - 1}"
            reason = "a damaged page of the reports table: the rows on it, if any, are not imported"
            result.failed.append(MigrationFailure(f"{path}#{where}", reason))


def _readable_rowids(conn: sqlite3.Connection) -> tuple[list[int], list[tuple[int, int | None]]]:
    """Every rowid the reports table's b-tree yields, in order, and the ranges ``[low, high)``
    (``high`` None: to the end) that a damaged page hides."""
    rowids: list[int] = []
    gaps: list[tuple[int, int | None]] = []
    low: int | None = _MIN_ROWID  # the next rowid looked for is at least this
    while low is not None:
        count = 0
        try:
            cursor = conn.execute(
                "SELECT rowid FROM reports WHERE rowid >= ? ORDER BY rowid LIMIT ?", (low, _ROWID_BATCH)
            )
            for (rowid,) in cursor:
                rowids.append(rowid)
                count += 1
                low = rowid + 1 if rowid < _MAX_ROWID else None
        except _READ_ERRORS as error:
            if not _is_damage(error) or low is None:
                raise
            readable, first = _probe(conn, low)  # the scan reads a row ahead: the damage may be past it
            if readable:
                if first is None:
                    break
                rowids.append(first)
                low = first + 1 if first < _MAX_ROWID else None
                continue
            resume = _first_readable(conn, low)
            gaps.append((low, resume))
            low = resume
            continue
        if count < _ROWID_BATCH:
            break
    return rowids, gaps


def _probe(conn: sqlite3.Connection, low: int) -> tuple[bool, int | None]:
    """Whether a search of the b-tree for the first rowid at least ``low`` gets past the damaged
    pages, and that rowid (None: there is none)."""
    try:
        row = conn.execute(
            "SELECT rowid FROM reports WHERE rowid >= ? ORDER BY rowid LIMIT 1", (low,)
        ).fetchone()
    except _READ_ERRORS as error:
        if not _is_damage(error):
            raise
        return False, None
    return True, None if row is None else int(row[0])


def _first_readable(conn: sqlite3.Connection, damaged: int) -> int | None:
    """The first rowid past the damage met looking from ``damaged`` (None: nothing readable past it).

    The b-tree is searched (not scanned) from rowids ``damaged + 1``, ``+ 2``, ``+ 4``, … until a
    search gets past the damaged page, then the smallest such start is found by bisection."""
    failing, step = damaged, 1
    while True:
        start = min(damaged + step, _MAX_ROWID)
        readable, found = _probe(conn, start)
        if readable:
            break
        if start == _MAX_ROWID:
            return None
        failing, step = start, step * 2
    passing = start
    while passing - failing > 1:
        middle = (failing + passing) // 2
        readable, first = _probe(conn, middle)
        if readable:
            passing, found = middle, first
        else:
            failing = middle
    return found


def _indexed_trace_ids(conn: sqlite3.Connection) -> tuple[dict[int, str], bool]:
    """``rowid -> trace_id`` read from a unique index on ``trace_id`` alone (the table's pages are not
    touched), and whether the whole index was read."""
    try:
        index = _trace_id_index(conn)
    except _READ_ERRORS:
        return {}, False
    if index is None:
        return {}, False
    found: dict[int, str] = {}
    try:
        for rowid, trace_id in conn.execute(
            f"SELECT rowid, trace_id FROM reports INDEXED BY {_quoted(index)}"
        ):
            found[int(rowid)] = str(trace_id)
    except _READ_ERRORS:
        return found, False
    return found, True


def _trace_id_index(conn: sqlite3.Connection) -> str | None:
    """The name of a unique index on ``trace_id`` alone (a primary key's), if the table has one."""
    for row in conn.execute("PRAGMA index_list(reports)").fetchall():
        name, unique, partial = row[1], row[2], row[4] if len(row) > 4 else 0
        indexed = [column[2] for column in conn.execute(f"PRAGMA index_info({_quoted(name)})")]
        if unique and not partial and indexed == ["trace_id"]:
            return str(name)
    return None


def _quoted(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _decode_body(text: Any, blob: Any) -> Report:
    if blob is not None:  # gzip, zlib or plain JSON; never more than MAX_REPORT_BYTES once inflated
        return report_from_json(inflate(stored_bytes(blob, "the report_blob cell"), "the stored report"))
    if text is not None:
        return report_from_json(inflate(stored_bytes(text, "the report_json cell"), "the stored report"))
    raise ReportError("the row holds no report")
