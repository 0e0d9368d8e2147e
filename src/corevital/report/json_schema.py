"""The JSON Schema of the report, generated from the pydantic models.

The generated schema is committed as ``src/corevital/report/report.schema.json`` (shipped as package
data) so that every change of the contract shows up as a diff; a test fails when the committed file
and the models disagree. Regenerate it with::

    python -m corevital.report.json_schema > src/corevital/report/report.schema.json
"""

from __future__ import annotations

import json
import sys
from importlib import resources
from typing import Any

from corevital.report.schema import Report
from corevital.report.schema_base import SCHEMA_VERSION

SCHEMA_FILE_NAME = "report.schema.json"
SCHEMA_ID = f"urn:corevital:report:{SCHEMA_VERSION}"
REGENERATE_COMMAND = "python -m corevital.report.json_schema > src/corevital/report/report.schema.json"


def report_json_schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) that a report document of this version satisfies."""
    schema = Report.model_json_schema(mode="validation")
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": SCHEMA_ID,
        "title": f"CoreVital report {SCHEMA_VERSION}",
        **{key: value for key, value in schema.items() if key != "title"},
    }


def render_report_json_schema() -> str:
    """The schema as the exact text of the committed file."""
    return json.dumps(report_json_schema(), indent=2, ensure_ascii=False) + "\n"


def committed_report_json_schema() -> str:
    """The text of the schema file shipped in the package."""
    return resources.files("corevital.report").joinpath(SCHEMA_FILE_NAME).read_text(encoding="utf-8")


def main() -> None:
    """Print the generated schema to standard output."""
    sys.stdout.write(render_report_json_schema())


if __name__ == "__main__":
    main()
