"""The original CoreVital's SQLite table (its ``SQLiteSink``), as ``corevital migrate --from-db`` reads
it: the tests build such databases, well-formed, damaged or hostile, from these statements."""

from __future__ import annotations

__all__ = ["FIRST_ORIGINAL_DDL", "ORIGINAL_DDL"]

ORIGINAL_DDL = (
    "CREATE TABLE reports (trace_id TEXT PRIMARY KEY, created_at_utc TEXT NOT NULL, model_id TEXT NOT NULL, "
    "schema_version TEXT NOT NULL, report_json TEXT, report_blob BLOB, prompt_hash TEXT, risk_score REAL)"
)
"""The table of the original CoreVital's later releases (JSON or a compressed blob per report)."""
FIRST_ORIGINAL_DDL = (
    "CREATE TABLE reports (trace_id TEXT PRIMARY KEY, created_at_utc TEXT NOT NULL, model_id TEXT NOT NULL, "
    "schema_version TEXT NOT NULL, report_json TEXT)"
)
"""Its first layout (JSON only)."""
