"""The protocol-signature check the sink tests use finds what ``isinstance`` on a runtime protocol misses."""

from __future__ import annotations

from corevital.report.schema import Report
from corevital.sinks.base import MemorySink, ReportStore, Sink
from tests.support.protocols import protocol_methods, signature_problems


class _NamesOnly:
    """Has every name a runtime ``isinstance`` looks for, none with a usable signature."""

    def write(self, report: Report, destination: str) -> str:
        return destination

    def close(self, force: bool) -> None:
        return None


def test_methods_of_the_protocol_and_its_bases_are_checked() -> None:
    assert set(protocol_methods(Sink)) == {"write", "close"}
    assert set(protocol_methods(ReportStore)) == {
        *("write", "close", "get", "resolve", "get_json", "contains"),
        *("list", "count", "page", "aggregate", "follow"),
    }


def test_a_conforming_store_has_no_problems() -> None:
    assert signature_problems(MemorySink(), ReportStore) == []


def test_signatures_are_checked_not_just_names() -> None:
    assert isinstance(_NamesOnly(), Sink)  # what the runtime check accepts
    assert signature_problems(_NamesOnly(), Sink) == [
        "write: extra parameter 'destination' without a default",
        "close: extra parameter 'force' without a default",
    ]
    assert "get: missing or not callable" in signature_problems(_NamesOnly(), ReportStore)
