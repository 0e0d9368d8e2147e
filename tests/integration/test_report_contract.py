"""Real reports hold only declared fields: every capture mode, beam search, seq2seq, calibrated, intervened.

Each report is built by the pipeline from a tiny model's capture; the test walks its model tree
(no model may carry undeclared fields), checks the written JSON against the committed JSON Schema
(which forbids undeclared properties) and reads it back unchanged. The hidden-state sketch is
recomputed from the model with the seed the report records.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from pydantic import BaseModel

from corevital.analysis.policies import StopWhen
from corevital.analysis.profiles import load_profile
from corevital.capture.loading import LoadedModel
from corevital.capture.records import SKETCH_SEED
from corevital.live import LiveSession
from corevital.metrics.hidden import make_sketch_matrix
from corevital.perf import PerfRecorder
from corevital.pipeline import Pipeline
from corevital.report.encoding import report_from_json, report_to_document, report_to_json
from corevital.report.json_schema import committed_report_json_schema
from corevital.report.schema import Report
from tests.integration.conftest import tiny_settings
from tests.support.calibration import healthy_profile

PROMPTS = ["The quick brown fox jumps", "Hello world, this is a longer prompt"]


def models_in(node: Any, path: str = "report") -> Iterator[tuple[str, BaseModel]]:
    """Every pydantic model in the tree under ``node``, with where it is."""
    if isinstance(node, BaseModel):
        yield path, node
        for name in type(node).model_fields:
            yield from models_in(getattr(node, name), f"{path}.{name}")
    elif isinstance(node, list | tuple):
        for index, item in enumerate(node):
            yield from models_in(item, f"{path}[{index}]")
    elif isinstance(node, dict):
        for key, item in node.items():
            yield from models_in(item, f"{path}.{key}")


@pytest.fixture(scope="module")
def validator() -> Any:
    jsonschema = pytest.importorskip("jsonschema")
    return jsonschema.Draft202012Validator(json.loads(committed_report_json_schema()))


def check_declared(report: Report, validator: Any) -> dict[str, Any]:
    with_extras = [path for path, model in models_in(report) if model.model_extra]
    assert with_extras == [], f"undeclared fields at {with_extras}"
    document = report_to_document(report)
    errors = [f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(document)]
    assert errors == []
    text = report_to_json(report)
    assert report_to_json(report_from_json(text)) == text
    return document


def build(
    tiny_loaded: Callable[[str], LoadedModel], arch: str, callback: Any = None, **settings: Any
) -> list[Report]:
    pipeline = Pipeline(tiny_settings(max_new_tokens=6, **settings))
    pipeline.use_model(tiny_loaded(arch))
    run = pipeline.capture(PROMPTS, callback=callback)
    if isinstance(callback, LiveSession):
        callback.annotate(run)
    return pipeline.build(run)


@pytest.mark.parametrize(
    ("arch", "settings"),
    [
        ("llama", {"capture": "full", "validate_metrics": True}),
        ("llama", {"capture": "summary"}),
        ("llama", {"capture": "on_risk", "on_risk_threshold": 0.0}),  # detail kept
        ("llama", {"capture": "on_risk", "on_risk_threshold": 1.0}),  # detail dropped
        ("gpt2", {"num_beams": 2, "early_stopping": True}),
        ("t5", {"temperature": 0.8}),
        ("bart", {"capture": "full"}),
        ("mixtral", {"capture": "full"}),
    ],
    ids=["full", "summary", "on_risk-kept", "on_risk-dropped", "beam", "t5-sampled", "bart", "moe"],
)
def test_reports_of_every_capture_mode_hold_only_declared_fields(
    arch: str, settings: dict[str, Any], tiny_loaded: Callable[[str], LoadedModel], validator: Any
) -> None:
    reports = build(tiny_loaded, arch, **settings)
    assert len(reports) == 2
    for report in reports:
        document = check_declared(report, validator)
        assert {"risk", "early_warning", "repetition", "mid_layer"} <= set(document["extensions"])


def test_a_calibrated_run_with_rag_context_and_timings_holds_only_declared_fields(
    tiny_loaded: Callable[[str], LoadedModel], validator: Any, tmp_path: Path
) -> None:
    pipeline = Pipeline(tiny_settings(max_new_tokens=6))
    pipeline.use_model(tiny_loaded("llama"))
    profile_path = healthy_profile(pipeline, 4, tmp_path / "profile.json")
    rag = tmp_path / "rag.json"
    rag.write_text(json.dumps({"context_token_count": 3, "retrieved_doc_ids": ["doc-1"]}))
    calibrated = Pipeline(
        tiny_settings(
            max_new_tokens=6,
            calibration=str(profile_path),
            rag_context=str(rag),
            perf="strict",
            out=str(tmp_path / "runs"),
        )
    )
    calibrated.use_model(tiny_loaded("llama"))
    reports = calibrated.run(PROMPTS, perf=PerfRecorder("strict")).reports
    for report in reports:
        check_declared(report, validator)
        assert (
            report.extensions.calibration is not None and report.extensions.calibration.baseline_num_runs == 4
        )
        assert report.extensions.rag is not None and report.extensions.performance is not None
        assert report.extensions.performance.detailed_breakdown is not None


def test_an_intervened_run_holds_only_declared_fields(
    tiny_loaded: Callable[[str], LoadedModel], validator: Any
) -> None:
    stop = StopWhen(lambda step: step.step == 2, name="stop_at_two", reason="test says so")
    live = LiveSession(load_profile("llama"), policies=[stop])
    for report in build(tiny_loaded, "llama", callback=live):
        document = check_declared(report, validator)
        assert report.generated.finish_reason == "stopped_by_callback"
        assert document["extensions"]["intervention"] == {
            "policy": "stop_at_two",
            "step": 2,
            "reason": "test says so",
        }


def test_the_recorded_sketch_seed_reproduces_the_sketches(tiny_loaded: Callable[[str], LoadedModel]) -> None:
    """A sketch recomputed from the model's own hidden state with the recorded seed matches the report's."""
    loaded = tiny_loaded("llama")
    report = build(tiny_loaded, "llama", capture="full")[0]
    sketch = report.run_config.summaries.hidden.sketch
    assert sketch is not None and sketch.seed == SKETCH_SEED
    # The second generated token's step sees prompt + first token; layer 0's output at the last position.
    ids = torch.tensor([report.prompt.token_ids + report.generated.token_ids[:1]])
    with torch.no_grad():
        hidden = loaded.model(input_ids=ids, output_hidden_states=True).hidden_states[1][0, -1]
    matrix = make_sketch_matrix(hidden.shape[-1], sketch.dim, seed=sketch.seed)
    recorded = report.timeline[1].layers[0].hidden_summary.sketch
    assert recorded is not None
    torch.testing.assert_close(torch.tensor(recorded), hidden.float() @ matrix, rtol=1e-4, atol=1e-5)
    other = make_sketch_matrix(hidden.shape[-1], sketch.dim, seed=0)
    assert not torch.allclose(torch.tensor(recorded), hidden.float() @ other, rtol=1e-2, atol=1e-3)
