"""Report: the pydantic schema (the contract), building, validation, JSON encoding, legacy reading.

Knows nothing of where reports go. Never imports torch.

Modules: :mod:`~corevital.report.schema` (the models, with ``schema_timeline`` and
``schema_extensions``), :mod:`~corevital.report.encoding` (JSON in and out),
:mod:`~corevital.report.legacy` (original CoreVital 0.3.0/0.4.0 documents),
:mod:`~corevital.report.json_schema` (the committed JSON Schema),
:mod:`~corevital.report.hashing` (the prompt hash) and :mod:`~corevital.report.timestamps`.
"""

from __future__ import annotations

from corevital.report.encoding import (
    load_report,
    report_from_document,
    report_from_json,
    report_to_document,
    report_to_json,
)
from corevital.report.hashing import prompt_hash
from corevital.report.schema import Report
from corevital.report.schema_base import READABLE_SCHEMA_VERSIONS, SCHEMA_VERSION

__all__ = [
    "READABLE_SCHEMA_VERSIONS",
    "SCHEMA_VERSION",
    "Report",
    "load_report",
    "prompt_hash",
    "report_from_document",
    "report_from_json",
    "report_to_document",
    "report_to_json",
]
