"""Custom sinks for the tests, importable by name (``--sink tests.support.sinks:RecordingSink``)."""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

from corevital.report.schema import Report

if TYPE_CHECKING:
    import pytest


class RecordingSink:
    """A user's sink with ``write``: every report it was given, in a class-level list."""

    written: ClassVar[list[Report]] = []
    closed: ClassVar[int] = 0

    def write(self, report: Report) -> str:
        RecordingSink.written.append(report)
        return f"recording#{report.trace_id}"

    def close(self) -> None:
        RecordingSink.closed += 1


class FailingExporter:
    """A user's exporter with ``export`` that always fails."""

    calls: ClassVar[int] = 0

    def export(self, report: Report) -> None:
        FailingExporter.calls += 1
        raise ConnectionError("the far end is down")

    def close(self) -> None:
        raise TimeoutError("flush timed out")


class NotASink:
    """Neither write nor export."""


def count_json_encodings(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The trace ids of the reports encoded to JSON (``report_to_json``) from now on, in order."""
    import corevital.report.encoding as encoding

    real, calls = encoding.report_to_json, []

    def counting(report: Report, pretty: bool = False) -> str:
        calls.append(report.trace_id)
        return real(report, pretty)

    monkeypatch.setattr(encoding, "report_to_json", counting)
    return calls
