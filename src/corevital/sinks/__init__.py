"""Sinks: persistence you can query back (SQLite by default, JSON files, PostgreSQL).

Never runs models and never imports torch.

Modules: :mod:`~corevital.sinks.base` (the ``Sink`` and ``ReportStore`` protocols, ``TraceRow``,
``TraceQuery``, ``MemorySink``), :mod:`~corevital.sinks.sqlite` (``SQLiteStore``, the default) with
:mod:`~corevital.sinks.sqlite_schema` (opening and migrations), :mod:`~corevital.sinks.local`
(``LocalFileSink``) and :mod:`~corevital.sinks.migrate` (importing trace directories and databases).
"""

from __future__ import annotations

from corevital.sinks.base import (
    HealthFlag,
    MemorySink,
    ReportStore,
    Sink,
    TraceQuery,
    TraceRow,
    trace_row_from_report,
)
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
from corevital.sinks.sqlite import SQLiteStore

__all__ = [
    "HealthFlag",
    "InPlaceMigration",
    "LocalFileSink",
    "MemorySink",
    "MigrationFailure",
    "MigrationResult",
    "ReportStore",
    "SQLiteStore",
    "Sink",
    "TraceQuery",
    "TraceRow",
    "migrate_directory",
    "migrate_original_in_place",
    "migrate_path",
    "migrate_sqlite",
    "trace_row_from_report",
]
