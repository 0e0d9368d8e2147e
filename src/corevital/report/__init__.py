"""Report: the pydantic schema (the contract), building, validation, JSON encoding, legacy reading.

Knows nothing of where reports go. Never imports torch.

Modules: :mod:`~corevital.report.schema` (the models, with ``schema_timeline`` and
``schema_extensions``), :mod:`~corevital.report.encoding` (JSON in and out),
:mod:`~corevital.report.legacy` (original CoreVital 0.3.0/0.4.0 documents),
:mod:`~corevital.report.json_schema` (the committed JSON Schema) and
:mod:`~corevital.report.timestamps`. The prompt hash is :func:`corevital.analysis.hashing.prompt_hash`.

Importing the package imports no submodule: the names below are imported on first use (PEP 562),
so that code needing only :mod:`~corevital.report.timestamps` (listing stored runs) does not pay
for the pydantic models.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from corevital._exports import lazy_exports

if TYPE_CHECKING:
    from corevital.report.encoding import (
        load_report,
        report_from_document,
        report_from_json,
        report_to_document,
        report_to_json,
    )
    from corevital.report.schema import Report
    from corevital.report.schema_base import READABLE_SCHEMA_VERSIONS, SCHEMA_VERSION

_HOMES: dict[str, str] = {
    "READABLE_SCHEMA_VERSIONS": "corevital.report.schema_base",
    "SCHEMA_VERSION": "corevital.report.schema_base",
    "Report": "corevital.report.schema",
    "load_report": "corevital.report.encoding",
    "report_from_document": "corevital.report.encoding",
    "report_from_json": "corevital.report.encoding",
    "report_to_document": "corevital.report.encoding",
    "report_to_json": "corevital.report.encoding",
}

__all__ = [
    "READABLE_SCHEMA_VERSIONS",
    "SCHEMA_VERSION",
    "Report",
    "load_report",
    "report_from_document",
    "report_from_json",
    "report_to_document",
    "report_to_json",
]


__getattr__, __dir__ = lazy_exports(__name__, _HOMES, globals(), __all__)
