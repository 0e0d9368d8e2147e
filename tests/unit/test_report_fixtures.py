"""Every trace written by the original CoreVital loads, upgrades without loss and round-trips."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from corevital.report.encoding import load_report, report_from_json, report_to_json
from corevital.report.schema import Report
from tests.support.golden import ORIGINAL_TRACE_NAMES, ORIGINAL_TRACES

FIXTURES = ORIGINAL_TRACES
FIXTURE_NAMES = ORIGINAL_TRACE_NAMES
LEGACY_LOGITS_NAMES = {
    "topk": "topk_probs",
    "voter_agreement": "topk_mass",
    "top1_top2_margin": "top_k_margin",
}


@pytest.fixture(scope="module")
def originals() -> dict[str, dict[str, Any]]:
    """The fixture documents as the original wrote them, parsed once per module."""
    assert FIXTURES.is_dir(), f"fixtures not found at {FIXTURES.resolve()}"
    return {name: json.loads((FIXTURES / name).read_bytes()) for name in FIXTURE_NAMES}


@pytest.fixture(scope="module")
def reports() -> dict[str, Report]:
    """The fixtures read through the public reader, once per module."""
    return {name: load_report(FIXTURES / name) for name in FIXTURE_NAMES}


@pytest.fixture(scope="module")
def encoded(reports: dict[str, Report]) -> dict[str, str]:
    return {name: report_to_json(report) for name, report in reports.items()}


def test_the_fixture_directory_holds_exactly_the_known_traces() -> None:
    assert sorted(path.name for path in FIXTURES.glob("*.json")) == sorted(FIXTURE_NAMES)


@pytest.mark.parametrize("name", FIXTURE_NAMES)
def test_fixture_loads_as_an_upgraded_report(name: str, reports: dict[str, Report]) -> None:
    report = reports[name]
    assert report.schema_version == "0.5.0"
    assert report.extensions.migrated_from == "0.4.0"
    assert report.timeline, "every fixture has generated steps"
    assert len(report.timeline) == report.summary.generated_tokens
    assert all(step.logits_summary.topk_mass is not None for step in report.timeline)
    assert all(step.logits_summary.top_k_margin is not None for step in report.timeline)
    assert all(step.logits_summary.topk_probs for step in report.timeline)
    assert report.extensions.risk is not None and report.extensions.risk.risk_score is not None
    assert report.extensions.fingerprint is not None and report.extensions.fingerprint.prompt_hash
    assert report.health_flags is not None


@pytest.mark.parametrize("name", FIXTURE_NAMES)
def test_upgrade_loses_no_data(
    name: str, originals: dict[str, dict[str, Any]], encoded: dict[str, str]
) -> None:
    """The written document is the original with only the documented changes applied."""
    assert json.loads(encoded[name]) == _expected_upgrade(originals[name])


@pytest.mark.parametrize("name", FIXTURE_NAMES)
def test_round_trip_is_lossless(name: str, reports: dict[str, Report], encoded: dict[str, str]) -> None:
    decoded = report_from_json(encoded[name])
    assert decoded == reports[name]
    assert report_to_json(decoded) == encoded[name]


def test_older_blamed_layers_become_objects_and_the_flat_list_is_kept(reports: dict[str, Report]) -> None:
    risk = reports["sample_report.json"].extensions.risk
    assert risk is not None
    assert risk.blamed_layers_flat[:3] == [0, 1, 2]
    assert [blamed.layer for blamed in risk.blamed_layers] == risk.blamed_layers_flat
    assert all(blamed.reasons == [] and blamed.severity is None for blamed in risk.blamed_layers)


def test_typed_extensions_of_the_original_are_reachable(reports: dict[str, Report]) -> None:
    extensions = reports["trace_8d0bad87.json"].extensions
    assert extensions.risk is not None and extensions.risk.attention_collapse_detail is not None
    assert extensions.risk.attention_collapse_detail.trend_detected is True
    assert extensions.compound_signals and extensions.compound_signals[0].name == "attention_bottleneck"
    assert extensions.performance is not None and extensions.performance.detailed_breakdown is not None
    assert extensions.fingerprint is not None and len(extensions.fingerprint.vector) == 25


def test_encoder_decoder_fixture_keeps_encoder_layers_and_cross_attention(reports: dict[str, Report]) -> None:
    report = reports["trace_8d0bad87.json"]
    assert report.encoder_layers is not None and len(report.encoder_layers) == report.model.num_layers
    assert all(layer.cross_attention is not None for layer in report.timeline[0].layers)
    assert report.health_flags is not None and report.health_flags.attention_collapse_severity == 0.4


def test_output_is_compact_and_never_writes_legacy_names(encoded: dict[str, str]) -> None:
    text = encoded["trace_8d0bad87.json"]
    outside_strings = re.sub(r'"(?:[^"\\]|\\.)*"', '""', text)
    assert not re.search(r"\s", outside_strings), "no whitespace between tokens"
    with_dash = encoded["trace_7c1c62d1.json"]
    assert "\u2014" in with_dash and "\\u2014" not in with_dash, "UTF-8, not ASCII-escaped"
    for step in json.loads(text)["timeline"]:
        assert not set(step["logits_summary"]) & set(LEGACY_LOGITS_NAMES)


def _expected_upgrade(original: dict[str, Any]) -> dict[str, Any]:
    """The documented upgrade of a 0.4.0 fixture, written out independently of ``report.legacy``.

    Null fields are dropped because the writer omits ``None`` fields.
    """
    doc: dict[str, Any] = _without_nulls(original)
    for step in doc["timeline"]:
        logits = step["logits_summary"]
        for legacy, current in LEGACY_LOGITS_NAMES.items():
            if legacy in logits:
                value = logits.pop(legacy)
                assert logits.setdefault(current, value) == value, "the two names carried the same value"
    risk = doc["extensions"]["risk"]
    if risk["blamed_layers"] and all(isinstance(item, int) for item in risk["blamed_layers"]):
        risk["blamed_layers_flat"] = risk["blamed_layers"]
        risk["blamed_layers"] = [{"layer": index, "reasons": []} for index in risk["blamed_layers"]]
    if isinstance(doc.get("health_flags"), dict):  # a flag newer than the fixtures, written as False
        doc["health_flags"].setdefault("layer_update_anomaly_detected", False)
    doc["schema_version"] = "0.5.0"
    doc["extensions"]["migrated_from"] = "0.4.0"
    return doc


def _without_nulls(value: Any) -> Any:
    """A copy of a JSON document without null object members."""
    if isinstance(value, dict):
        return {key: _without_nulls(item) for key, item in value.items() if item is not None}
    if isinstance(value, list):
        return [_without_nulls(item) for item in value]
    return value
