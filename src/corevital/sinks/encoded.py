"""A finished report with its encodings, each made at most once and shared by every destination.

A run's report goes to several places (a store, an HTTP endpoint, W&B, ...), each of which would
otherwise encode it again: for a 256-step full capture (about 200 KB of JSON) one encoding is
about 4 ms of CPU. :class:`EncodedReport` carries the report and makes, on first use and then
never again, its compact JSON text and UTF-8 bytes (exactly
:func:`~corevital.report.encoding.report_to_json`), the zlib blob the SQL stores keep, a gzip of
the JSON, and its index row (:func:`~corevital.sinks.rows.trace_row_from_report`). Thread-safe: a
background worker and the thread that finished the report may ask for the same encoding; it is
made once.

:class:`~corevital.exporters.base.Outputs` wraps each report once and hands the same object to
every store (``write_encoded``) and exporter (``export_encoded``) that has the method; a sink
that has only ``write(report)``/``export(report)`` gets the report itself. The object must not be
kept past the report being changed: its encodings are of the report as it was when first asked.
:func:`stored_json_text` and :func:`parse_stored` read a stored zlib blob back, for every SQL store.
"""

from __future__ import annotations

import gzip
import threading
import zlib
from typing import TYPE_CHECKING, Final, Protocol, runtime_checkable

if TYPE_CHECKING:
    from corevital.report.schema import Report
    from corevital.sinks.rows import TraceRow

ZLIB_LEVEL: Final = 6
"""The zlib level of a stored report (the SQLite and PostgreSQL stores)."""
GZIP_LEVEL: Final = 6
"""The gzip level of a posted report (the HTTP sink's)."""


class EncodedReport:
    """``report`` and, made lazily and once each, its JSON text and bytes, zlib blob, gzip body and
    index row."""

    __slots__ = ("_gzip", "_json_bytes", "_json_text", "_lock", "_row", "_zlib", "report")

    def __init__(self, report: Report) -> None:
        self.report = report
        self._lock = threading.Lock()
        self._json_text: str | None = None
        self._json_bytes: bytes | None = None
        self._zlib: bytes | None = None
        self._gzip: bytes | None = None
        self._row: TraceRow | None = None

    @classmethod
    def of(cls, report: Report | EncodedReport) -> EncodedReport:
        """``report`` itself when it is already an :class:`EncodedReport`, else a new one around it."""
        return report if isinstance(report, EncodedReport) else cls(report)

    @property
    def trace_id(self) -> str:
        return self.report.trace_id

    @property
    def encoded(self) -> bool:
        """Whether the JSON has been made already (by a store or an earlier exporter)."""
        return self._json_text is not None

    @property
    def json_text(self) -> str:
        """The report's compact JSON (:func:`~corevital.report.encoding.report_to_json`)."""
        text = self._json_text
        if text is None:
            with self._lock:
                if self._json_text is None:
                    from corevital.report.encoding import report_to_json

                    self._json_text = report_to_json(self.report)
                text = self._json_text
        return text

    @property
    def json_bytes(self) -> bytes:
        """:attr:`json_text` as UTF-8."""
        data = self._json_bytes
        if data is None:
            text = self.json_text
            with self._lock:
                if self._json_bytes is None:
                    self._json_bytes = text.encode("utf-8")
                data = self._json_bytes
        return data

    @property
    def zlib(self) -> bytes:
        """:attr:`json_bytes` zlib-compressed at :data:`ZLIB_LEVEL` (what the SQL stores keep)."""
        blob = self._zlib
        if blob is None:
            data = self.json_bytes
            with self._lock:
                if self._zlib is None:
                    self._zlib = zlib.compress(data, ZLIB_LEVEL)
                blob = self._zlib
        return blob

    @property
    def gzip(self) -> bytes:
        """:attr:`json_bytes` gzip-compressed at :data:`GZIP_LEVEL`, with no time stamp (the same
        bytes for the same report): the body the HTTP sink posts, for a sender that has the report
        in memory (the HTTP sink's own sender compresses what it reads back from its spool)."""
        body = self._gzip
        if body is None:
            data = self.json_bytes
            with self._lock:
                if self._gzip is None:
                    self._gzip = gzip.compress(data, GZIP_LEVEL, mtime=0)
                body = self._gzip
        return body

    @property
    def row(self) -> TraceRow:
        """The report's index row (:func:`~corevital.sinks.rows.trace_row_from_report`, ``seq`` 0)."""
        row = self._row
        if row is None:
            from corevital.sinks.rows import trace_row_from_report

            made = trace_row_from_report(self.report)
            with self._lock:
                if self._row is None:
                    self._row = made
                row = self._row
        return row

    def __repr__(self) -> str:
        return f"EncodedReport({self.trace_id!r}, encoded={self.encoded})"


def stored_json_text(value: object, where: str, limit: int) -> str:
    """The JSON text of a stored report (a database cell holding :attr:`EncodedReport.zlib`), inflated
    to at most ``limit`` bytes; a :class:`~corevital.errors.ReportError` naming ``where`` when the
    cell is not a blob, not zlib data, too large or not UTF-8."""
    from corevital.errors import ReportError
    from corevital.report.limits import inflate, stored_bytes

    blob = stored_bytes(value, where)
    if not blob.startswith(b"\x78"):
        raise ReportError(f"{where} is corrupt (not zlib data)")
    try:
        return inflate(blob, where, limit=limit).decode("utf-8")
    except UnicodeDecodeError as error:
        raise ReportError(f"{where} is corrupt ({error})") from None


def parse_stored(text: str, where: str) -> Report:
    """The report in a store's JSON ``text``; its :class:`~corevital.errors.ReportError` prefixed
    with ``where`` (``<store>#<trace id>``)."""
    from corevital.errors import ReportError
    from corevital.report.encoding import report_from_json

    try:
        return report_from_json(text)
    except ReportError as error:
        raise ReportError(f"{where}: {error}") from None


@runtime_checkable
class EncodedSink(Protocol):
    """A sink that can take an :class:`EncodedReport` (the built-in stores): it reuses the encoding
    instead of making its own. ``write_encoded`` returns what ``write`` returns."""

    def write_encoded(self, encoded: EncodedReport) -> str: ...


__all__ = ["GZIP_LEVEL", "ZLIB_LEVEL", "EncodedReport", "EncodedSink", "parse_stored", "stored_json_text"]
