"""Opening a CoreVital SQLite database safely: identity checks, WAL mode and running the migrations.

A database is ours when its ``PRAGMA application_id`` is :data:`APPLICATION_ID`; its
``PRAGMA user_version`` is the number of migrations applied (the tables and the chain are in
:mod:`corevital.sinks.sqlite_migrations`, whose column names are re-exported here). A missing or
empty file is initialised. Anything else is refused with a
:class:`~corevital.errors.StoreError` *before anything is written*: a file that is not SQLite, a
corrupt one, another application's database, a database of a newer CoreVital, and a database of
the original CoreVital (which ``corevital migrate`` imports instead). Readers may open a database
read-only (:func:`open_database_read_only`), which never creates, writes or migrates it.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import stat
import time
from enum import Enum
from pathlib import Path
from typing import Final

from corevital.errors import StoreError
from corevital.sinks.sqlite_migrations import FLAG_COLUMNS as FLAG_COLUMNS
from corevital.sinks.sqlite_migrations import LATEST_VERSION as LATEST_VERSION
from corevital.sinks.sqlite_migrations import MIGRATIONS as MIGRATIONS
from corevital.sinks.sqlite_migrations import REPORT_COLUMNS as REPORT_COLUMNS
from corevital.sinks.sqlite_migrations import RISK_SORT_SQL as RISK_SORT_SQL

log = logging.getLogger(__name__)

DB_FILE_NAME: Final = "corevital.db"
# The store the commands read and write by default: <out>/corevital.db with the default --out.
DEFAULT_DB_PATH: Final = "runs/" + DB_FILE_NAME
APPLICATION_ID: Final = 0x436F5669  # "CoVi"
BUSY_TIMEOUT_S: Final = 30.0
SQLITE_HEADER: Final = b"SQLite format 3\x00"


class DatabaseKind(Enum):
    """What an SQLite database is, judged from its header fields and tables."""

    EMPTY = "empty"
    COREVITAL = "corevital"
    ORIGINAL_COREVITAL = "original CoreVital (schema 0.3.0/0.4.0)"
    FOREIGN = "foreign"


def open_database(path: Path) -> sqlite3.Connection:
    """Open (creating or migrating as needed) the CoreVital database at ``path``.

    The connection is in autocommit mode with a busy timeout, and the database in WAL mode.
    """
    _refuse_non_sqlite_file(path)
    _ensure_directory(path.parent)
    repair_sidecars(path)
    try:
        conn = sqlite3.connect(path, timeout=BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False)
    except sqlite3.Error as error:
        raise StoreError(
            f"cannot open SQLite database {path}: {error} (is the directory writable?)"
        ) from None
    try:
        _require_ours_or_empty(conn, path)
        _enable_wal(conn)
        _migrate(conn, path)
    except sqlite3.OperationalError as error:  # cannot open, locked, read-only
        conn.close()
        raise StoreError(f"cannot open SQLite database {path}: {error}") from None
    except (sqlite3.DatabaseError, UnicodeDecodeError) as error:  # not a database, malformed
        conn.close()
        raise StoreError(
            f"{path} is not a CoreVital SQLite database ({_message(error)}); it was left untouched"
        ) from None
    except BaseException:
        conn.close()
        raise
    return conn


SIDECAR_SUFFIXES: Final = ("-wal", "-shm")


def repair_sidecars(path: Path) -> None:
    """Make a leftover ``-wal``/``-shm`` file writable again when the database file is.

    SQLite creates these files with the permissions of the database file; after a run against a
    read-only database file they stay read-only when the file is made writable again, and every
    later write fails ("attempt to write a readonly database"). A sidecar of ours gets the database
    file's permissions back; one we do not own is a one-line StoreError naming it.
    """
    try:
        main = path.stat()
    except OSError:
        return
    if not os.access(path, os.W_OK):
        return
    for suffix in SIDECAR_SUFFIXES:
        sidecar = path.with_name(path.name + suffix)
        if not sidecar.exists() or os.access(sidecar, os.W_OK):
            continue
        try:
            os.chmod(sidecar, stat.S_IMODE(main.st_mode))
        except OSError as error:
            raise StoreError(
                f"{sidecar} is read-only while {path} is writable ({error.strerror or error}): make it "
                f"writable, or remove it while no process has the database open"
            ) from None
        log.info("made %s writable again (the permissions of %s)", sidecar, path.name)


def open_database_read_only(path: Path) -> sqlite3.Connection:
    """Open the CoreVital database at ``path`` for reading only (``mode=ro``): never creates,
    writes or migrates it.

    A database in WAL mode needs its ``-shm`` file, which a reader creates when it is missing. In a
    directory the reader cannot write (or with a ``-shm`` it cannot read), the database is opened
    ``immutable=1`` instead: SQLite then takes no locks and reads the database file alone, so
    commits still in a ``-wal`` file are not seen (a warning says so when there is one) and a
    concurrent writer's changes are not noticed. A database nobody can write is what that is for.

    A missing file, a file that is not a CoreVital database, and a database of an older or newer
    version are each a :class:`~corevital.errors.StoreError`.
    """
    if not _exists(path):
        raise StoreError(f"no CoreVital database at {path}")
    _refuse_non_sqlite_file(path)
    try:
        return _connect_read_only(path, immutable=False)
    except sqlite3.OperationalError as error:
        if not _shm_unusable(path):
            raise StoreError(f"cannot read SQLite database {path}: {error}") from None
    wal = path.with_name(path.name + "-wal")
    if wal.exists() and wal.stat().st_size > 0:
        log.warning(
            "%s is read without its -wal file (the directory is not writable): recent runs may be missing",
            path,
        )
    try:
        return _connect_read_only(path, immutable=True)
    except sqlite3.Error as error:
        raise StoreError(f"cannot read SQLite database {path}: {error}") from None


def _message(error: Exception) -> str:
    """SQLite's message; for a damaged schema it quotes text that is not UTF-8, which Python's
    ``sqlite3`` cannot decode (a UnicodeDecodeError instead of the DatabaseError)."""
    if isinstance(error, UnicodeDecodeError):
        return "database disk image is malformed (SQLite quotes damaged text that is not UTF-8)"
    return str(error)


def _shm_unusable(path: Path) -> bool:
    """Whether a reader cannot use the ``-shm`` file: it is missing and cannot be created, or unreadable."""
    shm = path.with_name(path.name + "-shm")
    if shm.exists():
        return not os.access(shm, os.R_OK)
    return not os.access(path.parent, os.W_OK | os.X_OK)


def _connect_read_only(path: Path, *, immutable: bool) -> sqlite3.Connection:
    query = "immutable=1" if immutable else "mode=ro"
    try:
        conn = sqlite3.connect(
            f"{path.resolve().as_uri()}?{query}",
            uri=True,
            timeout=BUSY_TIMEOUT_S,
            isolation_level=None,
            check_same_thread=False,
        )
    except sqlite3.OperationalError:
        raise
    except sqlite3.Error as error:
        raise StoreError(f"cannot open SQLite database {path} for reading: {error}") from None
    try:
        _require_current_read_only(conn, path)
    except sqlite3.OperationalError:
        conn.close()
        raise
    except (sqlite3.DatabaseError, UnicodeDecodeError) as error:
        conn.close()
        raise StoreError(f"cannot read SQLite database {path}: {_message(error)}") from None
    except BaseException:
        conn.close()
        raise
    return conn


def _require_current_read_only(conn: sqlite3.Connection, path: Path) -> None:
    kind = database_kind(conn)
    if kind is DatabaseKind.EMPTY:
        raise StoreError(f"{path} holds no CoreVital database yet")
    _require_ours_or_empty(conn, path)
    version = _current_version(conn)
    if version < LATEST_VERSION:
        raise StoreError(
            f"{path} is a database of an older CoreVital (version {version}, this one reads "
            f"{LATEST_VERSION}); open it once with a writer to upgrade it "
            f"(for example `corevital runs --db {path}`)"
        )


def database_kind(conn: sqlite3.Connection) -> DatabaseKind:
    """Classify an open database without writing to it, from one consistent snapshot."""
    if conn.in_transaction:
        return _kind_in_transaction(conn)
    conn.execute("BEGIN")  # one read transaction: another process may be initialising the file
    try:
        return _kind_in_transaction(conn)
    finally:
        conn.execute("COMMIT")


def _kind_in_transaction(conn: sqlite3.Connection) -> DatabaseKind:
    app_id = conn.execute("PRAGMA application_id").fetchone()[0]
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    tables = user_tables(conn)
    if app_id == APPLICATION_ID:
        return DatabaseKind.COREVITAL
    if app_id == 0 and version == 0 and not tables:
        return DatabaseKind.EMPTY
    if app_id == 0 and "reports" in tables and is_original_reports_table(conn):
        return DatabaseKind.ORIGINAL_COREVITAL
    return DatabaseKind.FOREIGN


def user_tables(conn: sqlite3.Connection) -> set[str]:
    """Names of the database's own tables."""
    rows = conn.execute("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'")
    return {name for (name,) in rows}


def table_columns(conn: sqlite3.Connection, table: str) -> set[str]:
    """Column names of ``table``."""
    return {row[1] for row in conn.execute("SELECT * FROM pragma_table_info(?)", (table,))}


def is_original_reports_table(conn: sqlite3.Connection) -> bool:
    """Whether ``reports`` has the original CoreVital SQLiteSink's layout (see ``sinks.migrate``)."""
    columns = table_columns(conn, "reports")
    return "trace_id" in columns and bool(columns & {"report_json", "report_blob"})


def read_header(path: Path) -> bytes:
    """The first bytes of a file, enough to tell an SQLite database (one-line StoreError if unreadable)."""
    try:
        with path.open("rb") as handle:
            return handle.read(len(SQLITE_HEADER))
    except OSError as error:
        raise StoreError(f"cannot read {path}: {error.strerror or error}") from None


def _exists(path: Path) -> bool:
    """Whether ``path`` exists; a path the system refuses (too long, a loop) is a one-line StoreError."""
    try:
        return path.exists()
    except OSError as error:
        raise StoreError(f"cannot use the database path {path}: {error.strerror or error}") from None


def _refuse_non_sqlite_file(path: Path) -> None:
    if not _exists(path):
        return
    if not path.is_file():
        raise StoreError(f"{path} is not a CoreVital SQLite database (not a regular file)")
    header = read_header(path)
    if header and header != SQLITE_HEADER:
        raise StoreError(
            f"{path} is not a CoreVital SQLite database (not an SQLite file); it was left untouched"
        )


def _ensure_directory(directory: Path) -> None:
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise StoreError(f"cannot create directory {directory}: {error.strerror or error}") from None


def _require_ours_or_empty(conn: sqlite3.Connection, path: Path) -> None:
    kind = database_kind(conn)
    if kind is DatabaseKind.ORIGINAL_COREVITAL:
        raise StoreError(
            f"{path} is a database of the original CoreVital (schema 0.3.0/0.4.0); "
            f"import it into a new database with `corevital migrate` instead"
        )
    if kind is DatabaseKind.FOREIGN:
        tables = ", ".join(sorted(user_tables(conn))) or "none"
        raise StoreError(
            f"{path} is not a CoreVital SQLite database (tables: {tables}); it was left untouched"
        )
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    if version > LATEST_VERSION:
        raise StoreError(
            f"{path} was written by a newer CoreVital (database version {version}, "
            f"this one knows up to {LATEST_VERSION}); upgrade CoreVital"
        )


def _enable_wal(conn: sqlite3.Connection) -> None:
    deadline = time.monotonic() + BUSY_TIMEOUT_S
    while True:
        try:
            conn.execute("PRAGMA journal_mode=WAL").fetchone()
            return
        except sqlite3.OperationalError as error:
            if "locked" not in str(error) or time.monotonic() > deadline:
                raise
            time.sleep(0.02)


def _migrate(conn: sqlite3.Connection, path: Path) -> None:
    if _current_version(conn) == LATEST_VERSION:
        return
    conn.execute("BEGIN IMMEDIATE")
    try:
        _require_ours_or_empty(conn, path)  # another process may have initialised it meanwhile
        for migration in MIGRATIONS[_current_version(conn) :]:
            migration(conn)
        conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
        conn.execute(f"PRAGMA user_version = {LATEST_VERSION}")
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise


def _current_version(conn: sqlite3.Connection) -> int:
    app_id = conn.execute("PRAGMA application_id").fetchone()[0]
    version: int = conn.execute("PRAGMA user_version").fetchone()[0]
    return version if app_id == APPLICATION_ID else 0
