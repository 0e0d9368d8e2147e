"""JSON encoding and decoding of reports.

Writing: compact separators (or indented with ``pretty``), UTF-8 text that is not ASCII-escaped,
``None`` fields omitted, finite floats only (NaN and ±Inf are written as ``null``; read back, such a
null is ``None``, so the next write omits it). numpy scalars and arrays left in free-form
``extensions`` are written as their Python values.

Reading accepts schema 0.3.0, 0.4.0 (upgraded by :mod:`corevital.report.legacy`) and 0.5.0, and
tolerates the ``NaN``/``Infinity`` tokens that Python's ``json`` module writes. Reading is bounded
(:mod:`corevital.report.limits`): nesting deeper than 256 levels, a number of more than 4,300 digits,
and a file (or its gzip/zlib-inflated content) larger than 256 MB are refused. Every failure is a
:class:`~corevital.errors.ReportError` with a one-line message.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from corevital.errors import ReportError, validation_line
from corevital.report.legacy import upgrade_document
from corevital.report.limits import MAX_REPORT_BYTES, check_json_text, inflate, read_bounded
from corevital.report.schema import Report
from corevital.report.schema_base import SCHEMA_VERSION

__all__ = [
    "SCHEMA_VERSION",
    "load_report",
    "report_from_document",
    "report_from_json",
    "report_to_document",
    "report_to_json",
]

_CURRENT_HEAD = re.compile(r'\s*\{\s*"schema_version"\s*:\s*"' + re.escape(SCHEMA_VERSION) + '"')


def report_to_json(report: Report, pretty: bool = False) -> str:
    """Encode ``report`` as JSON text (compact unless ``pretty``)."""
    try:
        return report.model_dump_json(
            indent=2 if pretty else None, exclude_none=True, fallback=_json_fallback
        )
    except (TypeError, ValueError) as error:  # pydantic_core.PydanticSerializationError is a ValueError
        problem = " ".join(str(error).split())
        raise ReportError(f"report {report.trace_id} cannot be encoded: {problem}") from error


def report_to_document(report: Report) -> dict[str, Any]:
    """The JSON document of ``report`` as Python objects (exactly what :func:`report_to_json` writes)."""
    document: dict[str, Any] = json.loads(report_to_json(report))
    return document


def report_from_json(text: str | bytes) -> Report:
    """Decode a report of any readable schema version, upgrading legacy ones to 0.5.0."""
    check_json_text(text, "invalid report JSON")
    if _CURRENT_HEAD.match(text[:64] if isinstance(text, str) else text[:64].decode("utf-8", "replace")):
        try:  # fast path for documents we wrote: pydantic's own JSON parser, no upgrade
            return Report.model_validate_json(text)
        except ValidationError:
            pass  # the general path below gives the one-line message
    try:
        document = json.loads(text)
    except json.JSONDecodeError as error:
        raise ReportError(
            f"invalid report JSON: {error.msg} at line {error.lineno} column {error.colno}"
        ) from None
    except UnicodeDecodeError as error:
        raise ReportError(
            f"invalid report JSON: not UTF-8 text ({error.reason} at byte offset {error.start})"
        ) from None
    except RecursionError:
        raise ReportError("invalid report JSON: nested too deeply; refused") from None
    except ValueError as error:  # a number Python will not convert (beyond its digit limit)
        raise ReportError(f"invalid report JSON: {' '.join(str(error).split())[:200]}") from None
    return report_from_document(document)


def report_from_document(document: Any) -> Report:
    """Validate a parsed JSON document of any readable schema version as a 0.5.0 :class:`Report`."""
    if not isinstance(document, Mapping):
        raise ReportError(f"not a CoreVital report: the JSON document is a {type(document).__name__}")
    upgraded = upgrade_document(document)
    try:
        return Report.model_validate(upgraded)
    except ValidationError as error:
        raise ReportError(_describe(error, upgraded.get("trace_id"))) from None


def load_report(path: str | Path, *, limit: int = MAX_REPORT_BYTES) -> Report:
    """Read and decode the report file at ``path`` (JSON, or gzip/zlib-compressed JSON), refusing
    one larger than ``limit`` bytes once inflated."""
    location = Path(path)
    data = read_bounded(location, limit, f"report {location}", error=ReportError)
    try:
        return report_from_json(inflate(data, "the report", limit=limit))
    except ReportError as error:
        raise ReportError(f"{location}: {error}") from None


def _describe(error: ValidationError, trace_id: Any) -> str:
    subject = f"report {trace_id}" if isinstance(trace_id, str) else "report"
    line = f"invalid {subject}: {validation_line(error, where_default='(document)')}"
    # A key or trace id of the document may hold a line break: escaped, the message stays one line.
    return "".join(char if char.isprintable() else repr(char)[1:-1] for char in line)


def _json_fallback(value: Any) -> Any:
    tolist = getattr(value, "tolist", None)  # numpy scalars and arrays
    if callable(tolist):
        return tolist()
    raise TypeError(f"a value of type {type(value).__name__} is not JSON")
