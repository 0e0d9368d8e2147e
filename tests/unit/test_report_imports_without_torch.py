"""``report/`` and ``sinks/`` import with numpy and pydantic only: torch is made unimportable."""

from __future__ import annotations

from tests.support.imports import assert_imports_without_torch

MODULES = [
    "corevital.report",
    "corevital.report.json_schema",
    "corevital.report.legacy",
    "corevital.sinks",
    "corevital.sinks.sqlite",
    "corevital.sinks.local",
    "corevital.sinks.migrate",
]


def test_report_and_sinks_import_without_torch() -> None:
    assert_imports_without_torch(MODULES)
