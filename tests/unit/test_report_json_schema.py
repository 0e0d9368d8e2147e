"""The committed JSON Schema is the one the models generate, and written reports satisfy it."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from corevital.report.encoding import load_report, report_to_document
from corevital.report.json_schema import (
    REGENERATE_COMMAND,
    committed_report_json_schema,
    render_report_json_schema,
    report_json_schema,
)

DATA = Path(__file__).resolve().parents[1] / "data"
SMALL_FIXTURE = DATA / "original-corevital" / "trace_8d0bad87.json"
SCHEMA_FILE = Path(__file__).resolve().parents[2] / "src" / "corevital" / "report" / "report.schema.json"


def test_committed_schema_matches_the_models() -> None:
    assert committed_report_json_schema() == render_report_json_schema(), (
        f"src/corevital/report/report.schema.json is out of date; regenerate it with: {REGENERATE_COMMAND}"
    )


def test_the_packaged_schema_is_the_file_in_the_repository() -> None:
    assert SCHEMA_FILE.read_text(encoding="utf-8") == committed_report_json_schema()


FREE_FORM = {
    "/$defs/LayerSummary/properties/extensions",
    "/$defs/TimelineStep/properties/extensions",
    "/$defs/PerformanceInfo/properties/detailed_breakdown/anyOf/0",
    "/$defs/RagContext/properties/retrieval_metadata/anyOf/0",
    "/$defs/RunConfig/properties/generate_kwargs/anyOf/0",
}
"""The objects declared free-form; every other object of the schema forbids undeclared properties."""


def _objects(node: Any, path: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    if isinstance(node, dict):
        if node.get("type") == "object" or "properties" in node:
            yield path, node
        for key, value in node.items():
            yield from _objects(value, f"{path}/{key}")
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from _objects(value, f"{path}/{index}")


def test_schema_describes_version_0_5_0() -> None:
    schema = report_json_schema()
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["properties"]["schema_version"]["const"] == "0.5.0"
    for name in ("trace_id", "created_at_utc", "model", "run_config", "prompt", "generated", "summary"):
        assert name in schema["required"]


def test_every_object_but_the_free_form_slots_forbids_undeclared_properties() -> None:
    objects = dict(_objects(report_json_schema()))
    assert len(objects) > 40
    open_ = {path for path, node in objects.items() if node.get("additionalProperties") is not False}
    assert open_ == FREE_FORM


@pytest.fixture(scope="module")
def validator() -> Any:
    jsonschema = pytest.importorskip("jsonschema")
    schema = json.loads(committed_report_json_schema())
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


@pytest.mark.parametrize(
    "path",
    [
        DATA / "golden_report_small.json",
        DATA / "legacy_0.3.0_gpt2.json",
        DATA / "legacy_0.4.0_flan_t5.json",
        SMALL_FIXTURE,  # the smallest original trace (encoder-decoder); the others take seconds each
    ],
    ids=lambda path: path.name,
)
def test_written_reports_satisfy_the_schema(validator: Any, path: Path) -> None:
    errors = [
        f"{list(error.absolute_path)}: {error.message}"
        for error in validator.iter_errors(report_to_document(load_report(path)))
    ]
    assert errors == []


@pytest.mark.parametrize(
    "where",
    [(), ("model",), ("extensions",), ("extensions", "early_warning"), ("timeline", 0, "logits_summary")],
    ids=lambda where: ".".join(map(str, where)) or "top level",
)
def test_the_schema_rejects_an_undeclared_property(validator: Any, where: tuple[str | int, ...]) -> None:
    document = report_to_document(load_report(DATA / "golden_report_small.json"))
    assert validator.is_valid(document)
    node: Any = document
    for key in where:
        node = node[key]
    node["undeclared"] = 1
    assert not validator.is_valid(document)


def test_the_schema_rejects_a_legacy_document(validator: Any) -> None:
    document = json.loads((DATA / "legacy_0.4.0_flan_t5.json").read_text(encoding="utf-8"))
    assert not validator.is_valid(document)
