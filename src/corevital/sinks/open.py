"""Opening a store by name (``--sink``) or by location (``--db``): the one place that knows which
class serves which kind of store.

A location is a SQLite file path or a ``postgresql://`` (``postgres://``) URL; the PostgreSQL store
lives behind the ``postgres`` extra and is imported only when such a URL is given.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from corevital.errors import ConfigError, NotAvailableError
from corevital.sinks.postgres_url import POSTGRES_SCHEMES, is_postgres_url, redact_url

if TYPE_CHECKING:
    from corevital.config import Settings
    from corevital.sinks.base import ReportStore, Sink


def store_location(name: str, settings: Settings) -> str:
    """Where the store named ``name`` writes, as the report's ``run_config.sink.target`` says it."""
    from corevital.sinks.sqlite_schema import DB_FILE_NAME

    if name == "sqlite":
        return settings.db or str(Path(settings.out) / DB_FILE_NAME)
    if name == "postgres":
        return redact_url(settings.db or "")
    return settings.out


def open_store(name: str, settings: Settings) -> Sink:
    """The store named ``name`` (sqlite, local, postgres), opened for writing."""
    from corevital.sinks.local import LocalFileSink

    if name == "local":
        return LocalFileSink(settings.out, pretty=settings.json_pretty)
    if name == "sqlite":
        if settings.db is not None and is_postgres_url(settings.db):
            raise ConfigError("--db is a PostgreSQL URL: use --sink postgres (or give a SQLite file path)")
        return open_location(store_location("sqlite", settings))
    if name == "postgres":
        if settings.db is None or not is_postgres_url(settings.db):
            raise ConfigError("--sink postgres needs --db postgresql://user@host/database")
        return open_location(settings.db)
    raise ConfigError(f"{name!r} is not a store (sqlite, local, postgres)")


def open_location(
    location: str | Path, *, read_only: bool = False, readers: int = 1, create: bool = True
) -> ReportStore:
    """The store at ``location``: a SQLite file, or a PostgreSQL database given by URL.

    ``readers`` is the number of connections reads may use side by side (a PostgreSQL store's
    pool size). ``create=False`` refuses a PostgreSQL database that holds no store yet instead
    of creating its tables (a SQLite writer always creates its file).
    """
    if is_postgres_url(location):
        try:
            from corevital.sinks.postgres import PostgresStore
        except ImportError as exc:
            raise NotAvailableError(
                "a PostgreSQL store needs the postgres extra: pip install 'corevital[postgres]' "
                f"({exc.name} is missing)"
            ) from exc
        store: ReportStore = PostgresStore(
            str(location), read_only=read_only, pool_size=max(readers, 1), create=create
        )
        return store
    from corevital.sinks.sqlite import SQLiteStore

    return SQLiteStore(location, read_only=read_only, readers=readers)


__all__ = [
    "POSTGRES_SCHEMES",
    "is_postgres_url",
    "open_location",
    "open_store",
    "redact_url",
    "store_location",
]
