"""Sinks: persistence you can query back (SQLite by default, PostgreSQL, JSON files).

Never runs models and never imports torch.

Modules: :mod:`~corevital.sinks.base` (the ``Sink`` and ``ReportStore`` protocols and
``MemorySink``) with :mod:`~corevital.sinks.rows` (``TraceRow``, ``TraceQuery``, ``Page``,
``ModelAggregate``: the typed index every store shares), :mod:`~corevital.sinks.encoded`
(``EncodedReport``: a report's JSON, made once for every destination),
:mod:`~corevital.sinks.sqlite` (``SQLiteStore``, the default) with
:mod:`~corevital.sinks.sqlite_schema` (opening and identity checks) and
:mod:`~corevital.sinks.sqlite_migrations` (the tables and the migration chain),
:mod:`~corevital.sinks.postgres` (``PostgresStore``, the ``postgres`` extra) with
:mod:`~corevital.sinks.postgres_schema`, :mod:`~corevital.sinks.local` (``LocalFileSink``) and
:mod:`~corevital.sinks.migrate` (importing trace directories and databases).

Importing the package imports no submodule: the names below are imported on first use (PEP 562),
so that listing stored runs does not load the report models.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from corevital._exports import lazy_exports

if TYPE_CHECKING:
    from corevital.sinks.base import MemorySink, ReportStore, Sink
    from corevital.sinks.encoded import EncodedReport
    from corevital.sinks.local import LocalFileSink
    from corevital.sinks.migrate import (
        InPlaceMigration,
        MigrationFailure,
        MigrationResult,
        migrate_directory,
        migrate_original_in_place,
        migrate_path,
        migrate_sqlite,
    )
    from corevital.sinks.postgres import PostgresStore
    from corevital.sinks.rows import (
        MAX_PAGE_SIZE,
        HealthFlag,
        ModelAggregate,
        Page,
        SortOrder,
        TraceQuery,
        TraceRow,
        trace_row_from_report,
    )
    from corevital.sinks.sqlite import SQLiteStore

_HOMES: dict[str, str] = {
    "EncodedReport": "corevital.sinks.encoded",
    "MAX_PAGE_SIZE": "corevital.sinks.rows",
    "HealthFlag": "corevital.sinks.rows",
    "InPlaceMigration": "corevital.sinks.migrate",
    "LocalFileSink": "corevital.sinks.local",
    "MemorySink": "corevital.sinks.base",
    "MigrationFailure": "corevital.sinks.migrate",
    "MigrationResult": "corevital.sinks.migrate",
    "ModelAggregate": "corevital.sinks.rows",
    "Page": "corevital.sinks.rows",
    "PostgresStore": "corevital.sinks.postgres",
    "ReportStore": "corevital.sinks.base",
    "SQLiteStore": "corevital.sinks.sqlite",
    "Sink": "corevital.sinks.base",
    "SortOrder": "corevital.sinks.rows",
    "TraceQuery": "corevital.sinks.rows",
    "TraceRow": "corevital.sinks.rows",
    "migrate_directory": "corevital.sinks.migrate",
    "migrate_original_in_place": "corevital.sinks.migrate",
    "migrate_path": "corevital.sinks.migrate",
    "migrate_sqlite": "corevital.sinks.migrate",
    "trace_row_from_report": "corevital.sinks.rows",
}

__all__ = [
    "EncodedReport",
    "HealthFlag",
    "InPlaceMigration",
    "LocalFileSink",
    "MAX_PAGE_SIZE",
    "MemorySink",
    "MigrationFailure",
    "MigrationResult",
    "ModelAggregate",
    "Page",
    "PostgresStore",
    "ReportStore",
    "SQLiteStore",
    "Sink",
    "SortOrder",
    "TraceQuery",
    "TraceRow",
    "migrate_directory",
    "migrate_original_in_place",
    "migrate_path",
    "migrate_sqlite",
    "trace_row_from_report",
]


__getattr__, __dir__ = lazy_exports(__name__, _HOMES, globals(), __all__)
