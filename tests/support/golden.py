"""The golden report (``tests/data/golden_report_small.json``): one small, complete report that the
sink, exporter, view and reader tests start from."""

from __future__ import annotations

from pathlib import Path

from corevital.report.encoding import report_from_json
from corevital.report.schema import Report

__all__ = ["GOLDEN", "golden_report"]

GOLDEN = Path(__file__).resolve().parents[1] / "data" / "golden_report_small.json"


def golden_report() -> Report:
    """A new :class:`Report` read from :data:`GOLDEN` (the caller may change it)."""
    return report_from_json(GOLDEN.read_bytes())
