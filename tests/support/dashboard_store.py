"""The store the dashboard's browser tests run against (tests/e2e/test_dashboard.py).

The six original CoreVital traces (migrated) and tiny-model runs (``served_store``), plus two
sampled 60-step runs of a tiny Llama on one prompt (an early warning fires at a step; the second is
made with ``--perf``), a copy of the first whose prompt, output, narrative and one token carry markup
(the XSS probe, :data:`PROBE`), and a large report (32 layers × 32 heads × 1,000 steps, built from
the sampled run's steps and layers) for the first-view time.
"""

from __future__ import annotations

import copy
import itertools
import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from corevital.report.encoding import report_from_json
from corevital.sinks.sqlite import SQLiteStore
from tests.support.cli import run_args, run_ok
from tests.support.served import copy_store, original_documents, served_store

PROBE = "<img src=x onerror=alert(1)></script><script>alert(2)</script>"
SAMPLED_PROMPT = "The quick brown fox jumps over the lazy dog. Why is the sky blue?"
LARGE_LAYERS, LARGE_HEADS, LARGE_STEPS = 32, 32, 1000


@dataclass
class DashboardStore:
    db: Path
    sampled_id: str = ""
    resampled_id: str = ""
    probe_id: str = ""
    large_id: str = ""
    tiny_ids: list[str] = field(default_factory=list)


def probe_document(document: dict[str, Any]) -> dict[str, Any]:
    probe = copy.deepcopy(document)
    probe["trace_id"] = str(uuid.UUID(int=1))
    probe["prompt"]["text"] = f"Probe {PROBE} prompt"
    probe["generated"]["output_text"] = f"Output {PROBE}"
    probe["timeline"][3]["token"]["token_text"] = PROBE
    probe["extensions"]["narrative"] = {"summary": f"Narrative {PROBE}"}
    return probe


def large_document(document: dict[str, Any]) -> dict[str, Any]:
    """The sampled run's steps and layers repeated to 32 layers × 1,000 steps, with 32 heads."""
    large = copy.deepcopy(document)
    large["trace_id"] = str(uuid.UUID(int=2))
    large["model"]["num_layers"] = LARGE_LAYERS
    large["model"]["num_attention_heads"] = LARGE_HEADS
    steps = []
    for index, step in zip(range(LARGE_STEPS), itertools.cycle(document["timeline"]), strict=False):
        step = copy.deepcopy(step)
        step["step_index"] = index
        layers = []
        for layer_index, layer in zip(range(LARGE_LAYERS), itertools.cycle(step["layers"]), strict=False):
            layer = copy.deepcopy(layer)
            layer["layer_index"] = layer_index
            summary = layer.get("attention_summary") or {}
            if summary.get("max_weight_per_head"):
                summary["max_weight_per_head"] = (summary["max_weight_per_head"] * LARGE_HEADS)[:LARGE_HEADS]
            layers.append(layer)
        step["layers"] = layers
        steps.append(step)
    large["timeline"] = steps
    large["generated"]["num_tokens"] = LARGE_STEPS
    large["generated"]["token_ids"] = [step["token"]["token_id"] for step in steps]
    large["generated"]["output_text"] = "".join(step["token"]["token_text"] for step in steps)
    large["summary"]["generated_tokens"] = large["summary"]["total_steps"] = LARGE_STEPS
    analysis = large.get("prompt_analysis") or {}
    if analysis.get("layers"):
        layers = analysis["layers"]
        analysis["layers"] = [
            {
                **copy.deepcopy(layers[i % len(layers)]),
                "basin_scores": [((i * 7 + h) % 17) / 16 for h in range(32)],
            }
            for i in range(LARGE_LAYERS)
        ]
        analysis["layer_transformations"] = [0.1 + 0.02 * i for i in range(LARGE_LAYERS - 1)]
    return large


def build_dashboard_store(
    directory_factory: Callable[[str], Path], tiny_model: Callable[[str], Path]
) -> DashboardStore:
    """The store of this module (see the module docstring), in a new directory."""
    shared = served_store(directory_factory, tiny_model)
    directory = directory_factory("dashboard-store")
    db = copy_store(shared, directory)
    writer = SQLiteStore(db)
    try:
        tiny_ids = [row.trace_id for row in writer.list() if row.model_id not in original_models()]
        before = {row.trace_id for row in writer.list()}
        argv = [*run_args(tiny_model("llama"), directory), "--max_new_tokens", "60", "--temperature", "0.9"]
        argv += ["--ignore-eos"]
        run_ok(*argv, "--seed", "3", "--prompt", SAMPLED_PROMPT)
        (sampled_id,) = {row.trace_id for row in writer.list()} - before
        run_ok(*argv, "--seed", "5", "--perf", "summary", "--prompt", SAMPLED_PROMPT)
        (resampled_id,) = {row.trace_id for row in writer.list()} - before - {sampled_id}
        document = json.loads(writer.get_json(sampled_id) or "{}")
        probe = report_from_json(json.dumps(probe_document(document)))
        large = report_from_json(json.dumps(large_document(document)))
        writer.write(probe)
        writer.write(large)
    finally:
        writer.close()
    return DashboardStore(db, sampled_id, resampled_id, probe.trace_id, large.trace_id, tiny_ids)


def original_models() -> set[str]:
    return {str(document["model"]["hf_id"]) for document in original_documents().values()}


def report_json(store: DashboardStore, trace_id: str) -> dict[str, Any]:
    reader = SQLiteStore(store.db, read_only=True)
    try:
        document: dict[str, Any] = json.loads(reader.get_json(trace_id) or "{}")
        return document
    finally:
        reader.close()
