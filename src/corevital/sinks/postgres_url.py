"""PostgreSQL URLs: telling one from a SQLite path, and showing one without its password.

Kept apart from :mod:`corevital.sinks.postgres` (which needs the ``postgres`` extra) so that
:mod:`corevital.sinks.open` and the commands can use them without importing psycopg.
"""

from __future__ import annotations

import re
from pathlib import Path

POSTGRES_SCHEMES = ("postgresql://", "postgres://")
_PASSWORD_PARAM = re.compile(r"((?:^|&)password=)[^&]*")


def is_postgres_url(location: str | Path) -> bool:
    """Whether ``location`` is a ``postgresql://`` (or ``postgres://``) URL rather than a file path."""
    return str(location).startswith(POSTGRES_SCHEMES)


def redact_url(url: str) -> str:
    """A database URL without its password (for reports, logs and messages): ``user:***@host``,
    and ``password=***`` in the query string."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url
    rest, query_sep, query = rest.partition("?")
    if query_sep:
        query = _PASSWORD_PARAM.sub(r"\1***", query)
    if "@" in rest:
        credentials, _, host = rest.rpartition("@")
        user = credentials.split(":", 1)[0]
        rest = f"{user}:***@{host}" if ":" in credentials else rest
    return f"{scheme}://{rest}{query_sep}{query}"


__all__ = ["POSTGRES_SCHEMES", "is_postgres_url", "redact_url"]
