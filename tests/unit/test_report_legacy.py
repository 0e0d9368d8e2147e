"""Reading original CoreVital documents (0.3.0, 0.4.0): upgrade rules and version checks."""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path
from typing import Any

import pytest

from corevital.errors import ReportError
from corevital.report.encoding import load_report, report_from_document, report_to_document
from corevital.report.legacy import (
    DROPPED_WARNING_CODE,
    document_version,
    upgrade_document,
    upgrade_logits_summary,
)

DATA = Path(__file__).resolve().parents[1] / "data"
V030 = DATA / "legacy_0.3.0_gpt2.json"
V040 = DATA / "legacy_0.4.0_flan_t5.json"
V020 = DATA / "legacy_0.2.0_rejected.json"


def _document(path: Path) -> dict[str, Any]:
    document: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return document


def test_0_3_0_document_loads_with_legacy_names_mapped() -> None:
    report = load_report(V030)
    assert report.schema_version == "0.5.0"
    assert report.extensions.migrated_from == "0.3.0"
    first = report.timeline[0].logits_summary
    assert first.topk_mass == 0.72  # voter_agreement
    assert first.top_k_margin == 0.11  # top1_top2_margin (same value as top_k_margin)
    assert [(p.token_id, p.prob) for p in first.topk_probs] == [(383, 0.222), (632, 0.112)]  # topk
    written = report_to_document(report)["timeline"][0]["logits_summary"]
    assert not {"voter_agreement", "top1_top2_margin", "topk"} & set(written), "legacy names are not written"


def test_0_3_0_document_gets_defaults_for_fields_it_predates() -> None:
    report = load_report(V030)
    layer = report.timeline[0].layers[0]
    assert layer.hidden_summary.clipped is False
    assert layer.attention_summary.entropy_mean_normalized is None
    assert layer.attention_summary.collapsed_head_rate is None
    assert report.health_flags is not None and report.health_flags.attention_collapse_severity is None
    assert report.generated.finish_reason is None and report.model.num_key_value_heads is None


def test_0_3_0_nan_and_infinity_tokens_are_read_and_written_as_null() -> None:
    report = load_report(V030)
    second = report.timeline[1].logits_summary
    assert second.entropy is not None and math.isnan(second.entropy)
    assert second.perplexity == math.inf
    written = report_to_document(report)["timeline"][1]["logits_summary"]
    assert written["entropy"] is None and written["perplexity"] is None


def test_0_3_0_undeclared_fields_are_dropped_and_named_in_a_warning() -> None:
    report = load_report(V030)
    assert "my_plugin" not in report_to_document(report)["extensions"]
    assert report.extensions.performance is not None
    assert report.extensions.performance.parent_operations[0].name == "model_load"
    assert [w.code for w in report.warnings] == ["ATTENTION_NOT_AVAILABLE", DROPPED_WARNING_CODE]
    assert report.warnings[1].message.endswith("were dropped on reading: extensions.my_plugin")


def test_undeclared_fields_are_dropped_at_any_depth_once_per_path() -> None:
    document = _document(V040)
    document["model"]["old_field"] = 1
    for step in document["timeline"]:
        step["logits_summary"]["old_metric"] = 0.5
        for layer in step["layers"]:
            layer["hidden_summary"]["old_stat"] = 2.0
            layer["extensions"] = {"free": "form"}  # a free-form slot keeps what it holds
    report = report_from_document(document)
    dropped = [w for w in report.warnings if w.code == DROPPED_WARNING_CODE]
    assert len(dropped) == 1
    assert dropped[0].message.endswith(
        "model.old_field, timeline[].logits_summary.old_metric, timeline[].layers[].hidden_summary.old_stat"
    )
    assert report.timeline[0].layers[0].extensions == {"free": "form"}


def test_a_legacy_document_with_only_declared_fields_gets_no_warning() -> None:
    assert DROPPED_WARNING_CODE not in {w.code for w in load_report(V040).warnings}


def test_0_4_0_document_loads_with_every_section() -> None:
    report = load_report(V040)
    assert report.extensions.migrated_from == "0.4.0"
    assert report.encoder_layers is not None and report.encoder_layers[0].hidden_summary.clipped is True
    assert report.timeline[0].layers[0].cross_attention is not None
    assert report.timeline[0].token.token_text == "Déjà vu"
    ext = report.extensions
    assert (
        ext.risk is not None
        and [b.layer for b in ext.risk.blamed_layers] == [0] == ext.risk.blamed_layers_flat
    )
    assert (
        ext.fingerprint is not None and ext.fingerprint.version is None and len(ext.fingerprint.vector) == 9
    )
    assert ext.calibration is not None and ext.calibration.baseline_num_runs == 50
    assert ext.rag is not None and ext.rag.retrieval_metadata == {"k": 1}
    assert ext.compound_signals is not None and ext.compound_signals[0].severity == 0.65
    assert ext.early_warning is not None and ext.early_warning.failure_risk == 0.6


def test_0_4_0_duplicate_alias_fields_are_written_once() -> None:
    written = report_to_document(load_report(V040))
    for step in written["timeline"]:
        assert "voter_agreement" not in step["logits_summary"] and "topk" not in step["logits_summary"]
    assert written["timeline"][0]["logits_summary"]["topk_mass"] == 0.66


def test_legacy_value_that_disagrees_with_the_current_name_is_dropped_and_named() -> None:
    upgraded = upgrade_logits_summary({"topk_mass": 0.5, "voter_agreement": 0.75, "top1_top2_margin": 0.25})
    assert upgraded == {"topk_mass": 0.5, "voter_agreement": 0.75, "top_k_margin": 0.25}
    document = _document(V040)
    assert document["timeline"][0]["logits_summary"]["topk_mass"] == 0.66
    document["timeline"][0]["logits_summary"]["voter_agreement"] = 0.99
    report = report_from_document(document)
    assert report.timeline[0].logits_summary.topk_mass == 0.66
    assert report.warnings[-1].message.endswith("timeline[].logits_summary.voter_agreement")


def test_legacy_value_fills_a_null_current_field() -> None:
    assert upgrade_logits_summary({"topk_mass": None, "voter_agreement": 0.75}) == {"topk_mass": 0.75}


def test_blamed_layers_objects_are_left_alone() -> None:
    document = _document(V040)
    blamed = [{"layer": 3, "reasons": ["L2 norm outlier"], "severity": 0.5}]
    document["extensions"]["risk"] = {"risk_score": 0.5, "blamed_layers": blamed, "blamed_layers_flat": [3]}
    risk = report_from_document(document).extensions.risk
    assert risk is not None and risk.blamed_layers[0].reasons == ["L2 norm outlier"]
    assert risk.blamed_layers_flat == [3]


def test_existing_flat_list_is_not_replaced() -> None:
    document = _document(V040)
    document["extensions"]["risk"] = {"blamed_layers": [2, 5], "blamed_layers_flat": [5]}
    upgraded = upgrade_document(document)
    assert upgraded["extensions"]["risk"] == {
        "blamed_layers": [{"layer": 2}, {"layer": 5}],
        "blamed_layers_flat": [5],
    }


def test_upgrade_does_not_modify_its_input() -> None:
    document = _document(V030)
    before = copy.deepcopy(document)
    upgrade_document(document)
    assert json.dumps(document, sort_keys=True) == json.dumps(before, sort_keys=True)


def test_current_documents_are_not_changed() -> None:
    current = report_to_document(load_report(V040))
    upgraded = upgrade_document(current)
    assert upgraded == current and upgraded is not current


def test_a_legacy_document_without_extensions_still_records_its_origin() -> None:
    document = _document(V030)
    del document["extensions"]
    assert report_from_document(document).extensions.migrated_from == "0.3.0"


@pytest.mark.parametrize("version", ["0.3.0", "0.4.0"])
def test_legacy_versions_are_recognised(version: str) -> None:
    assert document_version({"schema_version": version}) == version


@pytest.mark.parametrize("version", ["0.1.0", "0.2.0", "0.4.1", "0.6.0", "1.0.0", ""])
def test_other_versions_are_rejected(version: str) -> None:
    with pytest.raises(ReportError, match=rf"unsupported report schema_version '{version}'"):
        report_from_document({"schema_version": version})


def test_rejected_version_file_names_the_file_and_the_readable_versions() -> None:
    with pytest.raises(ReportError) as caught:
        load_report(V020)
    message = str(caught.value)
    assert message.startswith(str(V020)) and "0.2.0" in message and "0.3.0, 0.4.0, 0.5.0" in message


@pytest.mark.parametrize("value", [None, 4, ["0.4.0"]])
def test_missing_or_non_string_version_is_rejected(value: Any) -> None:
    with pytest.raises(ReportError, match="no schema_version"):
        report_from_document({"schema_version": value})
