"""JSON encoding rules and the reader's error messages."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from corevital.errors import ReportError
from corevital.report.encoding import (
    SCHEMA_VERSION,
    load_report,
    report_from_document,
    report_from_json,
    report_to_document,
    report_to_json,
)
from corevital.report.schema import Report
from tests.support.golden import GOLDEN


@pytest.fixture
def report() -> Report:
    return report_from_json(GOLDEN.read_bytes())


def test_schema_version_is_0_5_0(report: Report) -> None:
    assert SCHEMA_VERSION == "0.5.0" == report.schema_version


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_non_finite_floats_are_written_as_null(report: Report, value: float) -> None:
    report.timeline[0].logits_summary.entropy = value
    assert report.timeline[0].layers[0].hidden_summary.sketch is not None
    report.timeline[0].layers[0].hidden_summary.sketch[0] = value
    report.extensions.fingerprint.vector[3] = value  # type: ignore[union-attr]
    text = report_to_json(report)
    document = json.loads(text, parse_constant=_reject_constant)  # strict JSON: no NaN/Infinity tokens
    step = document["timeline"][0]
    assert step["logits_summary"]["entropy"] is None
    assert step["layers"][0]["hidden_summary"]["sketch"][0] is None
    assert document["extensions"]["fingerprint"]["vector"][3] is None
    assert report_from_json(text).timeline[0].logits_summary.entropy is None


def _reject_constant(token: str) -> float:
    raise AssertionError(f"invalid JSON token {token}")


def test_non_finite_values_in_free_form_extensions_are_null_too(report: Report) -> None:
    report.timeline[0].extensions["probe"] = {"a": math.nan, "b": [1.0, math.inf]}
    assert report_to_document(report)["timeline"][0]["extensions"]["probe"] == {"a": None, "b": [1.0, None]}


def test_numpy_values_in_extensions_are_written_as_python_values(report: Report) -> None:
    report.timeline[0].extensions["probe"] = {"scalar": np.float32(0.5), "array": np.array([1, 2])}
    assert report_to_document(report)["timeline"][0]["extensions"]["probe"] == {
        "scalar": 0.5,
        "array": [1, 2],
    }


def test_unencodable_extension_values_are_a_report_error(report: Report) -> None:
    report.timeline[0].extensions["probe"] = object()
    with pytest.raises(ReportError, match="cannot be encoded"):
        report_to_json(report)


def test_none_fields_are_omitted(report: Report) -> None:
    document = report_to_document(report)
    assert "encoder_layers" not in document
    assert "cross_attention" not in document["timeline"][0]["layers"][0]
    assert "method" not in document["model"]["quantization"]
    assert "perplexity" not in document["timeline"][1]["logits_summary"]


def test_compact_by_default_and_indented_when_pretty(report: Report) -> None:
    compact = report_to_json(report)
    assert "\n" not in compact and '": ' not in compact and compact.startswith('{"schema_version":"0.5.0",')
    pretty = report_to_json(report, pretty=True)
    assert pretty.startswith('{\n  "schema_version": "0.5.0",')
    assert json.loads(pretty) == json.loads(compact)


def test_text_is_utf8_not_ascii_escaped(report: Report) -> None:
    text = report_to_json(report)
    assert " blé" in text and "\\u00e9" not in text
    assert report_from_json(text.encode("utf-8")) == report


@pytest.mark.parametrize(
    ("where", "path"),
    [
        (("model",), "model.future_field"),
        (("timeline", 0, "logits_summary"), "timeline.0.logits_summary.future_field"),
        (("extensions",), "extensions.future_field"),
        (("extensions", "risk", "blamed_layers", 0), "extensions.risk.blamed_layers.0.future_field"),
    ],
)
def test_undeclared_fields_of_a_0_5_0_report_are_refused(
    report: Report, where: tuple[str | int, ...], path: str
) -> None:
    document = report_to_document(report)
    node: Any = document
    for key in where:
        node = node[key]
    node["future_field"] = {"x": 1}
    readers: tuple[Callable[[], Report], ...] = (
        lambda: report_from_document(document),
        lambda: report_from_json(json.dumps(document)),
    )
    for read in readers:
        with pytest.raises(ReportError, match=rf"{re.escape(path)}: Extra inputs are not permitted"):
            read()


def test_the_free_form_slots_keep_what_they_hold(report: Report) -> None:
    document = report_to_document(report)
    document["timeline"][0]["extensions"]["acme"] = {"score": 3, "tags": ["a"]}
    document["timeline"][0]["layers"][0]["extensions"]["acme"] = [1, 2]
    assert report_to_document(report_from_document(document)) == document


def test_document_reader_and_json_reader_agree(report: Report) -> None:
    text = report_to_json(report)
    assert report_from_document(json.loads(text)) == report_from_json(text) == report


def test_fast_path_rejects_what_the_general_path_rejects(report: Report) -> None:
    document = report_to_document(report)
    document["summary"]["elapsed_ms"] = "soon"
    with pytest.raises(ReportError, match=r"invalid report .*summary\.elapsed_ms"):
        report_from_json(json.dumps(document, separators=(",", ":")))


def test_python_nan_tokens_are_read(report: Report) -> None:
    text = report_to_json(report).replace('"entropy":1.5', '"entropy":NaN', 1)
    assert "NaN" in text
    assert math.isnan(report_from_json(text).timeline[0].logits_summary.entropy or 0.0)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("{not json", r"^invalid report JSON: Expecting property name .* at line 1 column 2$"),
        (b"\xff\xfe\x00", r"^invalid report JSON"),
        ("[1, 2]", r"^not a CoreVital report: the JSON document is a list$"),
        ("{}", r"^not a CoreVital report: no schema_version$"),
        ('{"schema_version": "9.9.9"}', r"^unsupported report schema_version '9.9.9': this CoreVital reads"),
        (
            '{"schema_version": "0.5.0"}',
            r"^invalid report: trace_id: Field required \(and \d+ more problems\)$",
        ),
    ],
)
def test_invalid_input_gives_a_one_line_report_error(text: str | bytes, message: str) -> None:
    with pytest.raises(ReportError, match=message) as caught:
        report_from_json(text)
    assert "\n" not in str(caught.value)


def test_invalid_time_is_rejected(report: Report) -> None:
    document = report_to_document(report)
    document["created_at_utc"] = "yesterday"
    with pytest.raises(ReportError, match="created_at_utc: not an ISO 8601 time"):
        report_from_document(document)


def test_load_report_names_the_file_in_errors(tmp_path: Path) -> None:
    with pytest.raises(ReportError, match=r"cannot read report .*missing\.json"):
        load_report(tmp_path / "missing.json")
    broken = tmp_path / "broken.json"
    broken.write_text("{", encoding="utf-8")
    with pytest.raises(ReportError, match=r"broken\.json: invalid report JSON"):
        load_report(broken)


def test_load_report_reads_a_written_file(tmp_path: Path, report: Report) -> None:
    path = tmp_path / "report.json"
    path.write_text(report_to_json(report), encoding="utf-8")
    assert load_report(path) == report
